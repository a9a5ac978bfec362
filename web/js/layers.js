// Simulcast layers in the session view (docs/protocol.md, "Layers"):
// - the camera's encodings: three RIDs, a quarter, half and full size, each VP8 L1T3;
// - `layers` from the server: which of them anyone receives; the others are paused
//   (encodings[i].active = false) until they are named again;
// - `view`: each remote tile's height in device pixels, sent when it changes, so the
//   server sends no larger a layer than the tile shows;
// - `picture`: a remote tile whose picture is reduced (the viewer's own link carries
//   no more) says so, with a small badge (.tile-reduced) over the video.

import { h } from './ui.js';

export const SIMULCAST = [
  { rid: 'q', scaleResolutionDownBy: 4, scalabilityMode: 'L1T3' },
  { rid: 'h', scaleResolutionDownBy: 2, scalabilityMode: 'L1T3' },
  { rid: 'f', scaleResolutionDownBy: 1, scalabilityMode: 'L1T3' },
];
// Of a capped facility's video bitrate, what each layer may take (sums to the cap).
const BITRATE_SHARE = { q: 0.15, h: 0.3, f: 0.55 };
const VIEW_MIN_MS = 500;

/** Whether encoding `e` is sent now: the server may have paused its RID. */
export function layerActive(view, e) {
  const active = view.layers && view.layers.active;
  return !e.rid || !active || active.includes(e.rid);
}

/** The share of a bitrate cap a layer's encoding gets (all of it without simulcast). */
export function bitrateShare(e) {
  return (e.rid && BITRATE_SHARE[e.rid]) || 1;
}

/** The scale of a layer's encoding on top of the facility's own (1 without simulcast). */
export function layerScale(e) {
  const layer = SIMULCAST.find((x) => x.rid === e.rid);
  return layer ? layer.scaleResolutionDownBy : 1;
}

export class Layers {
  constructor(view) {
    this.view = view;
    this.active = null; // RIDs the server wants sent; null: all
    this.sent = new Map(); // slot -> height last reported
    this.ready = false; // a peer connection is negotiated: the server has its streams
    this.timer = null;
    this.observer = typeof ResizeObserver === 'undefined' ? null
      : new ResizeObserver(() => this.schedule());
    view.sig.addEventListener('layers', (e) => this.onLayers(e.detail));
    view.sig.addEventListener('picture', (e) => this.onPicture(e.detail));
  }

  /** Remote tiles built (again): watch their size. */
  watch(remote) {
    if (!this.observer) return;
    this.observer.disconnect();
    for (const r of remote) this.observer.observe(r.video);
  }

  /** A new peer connection was negotiated: the server knows no tile size yet. */
  negotiated() {
    this.ready = true;
    this.sent.clear();
    this.schedule();
  }

  /** The peer connection went away: nothing to report until the next one. */
  peerClosed() {
    this.ready = false;
  }

  schedule() {
    if (this.timer) return;
    this.timer = setTimeout(() => { this.timer = null; this.report(); }, VIEW_MIN_MS);
  }

  report() {
    const v = this.view;
    if (!this.ready || !v.pc || v.ended) return;
    for (const r of v.remote) {
      const height = Math.round(r.video.getBoundingClientRect().height * (window.devicePixelRatio || 1));
      const last = this.sent.get(r.role);
      if (!height || (last && Math.abs(height - last) < last * 0.1)) continue;
      this.sent.set(r.role, height);
      v.sig.send('view', { slot: r.role, role: 'video', height: Math.min(height, 4320) });
    }
  }

  async onLayers(msg) {
    const v = this.view;
    if (msg.role !== 'video' || !Array.isArray(msg.active)) return;
    this.active = msg.active;
    if (v.as === 'participant') await v.quality.applyLimits();
  }

  onPicture(msg) {
    const r = this.view.remote.find((x) => x.role === msg.slot);
    if (!r || msg.role !== 'video') return;
    let badge = r.fig.querySelector('.tile-reduced');
    if (!badge) {
      badge = h('span.tile-reduced', { attrs: { role: 'status' }, i18n: ['session.reducedPicture'] });
      r.fig.append(badge);
    }
    badge.hidden = !msg.reduced;
    r.fig.dataset.reduced = String(!!msg.reduced);
  }
}
