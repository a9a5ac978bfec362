// Screen sharing in the session view (docs/protocol.md, "Media layout of an offer" →
// screen share). Used by session.js; owns its transceivers, button and tiles.
//
// Offer layout (always negotiated, whether or not anyone shares):
//   participant: a THIRD transceiver (video, sendrecv) after its audio and video. It sends
//     this participant's screen once shared (getDisplayMedia, then sender.replaceTrack;
//     nothing until then) and receives the other participant's screen.
//   observer: two more recvonly video transceivers after its four: the referrer's screen,
//     then the specialist's.
//
// Elements:
//   #share-screen[data-sharing][aria-pressed]   participants: "Share screen" / "Stop sharing".
//        Sharing also stops when the browser's own "stop sharing" is used (track 'ended').
//   figure.tile.tile-screen[data-participant][data-shown] holding
//        #remote-screen                                       (participants)
//        #remote-screen-referrer, #remote-screen-specialist   (observers)
//     A screen tile is hidden unless frames are arriving on its receiver (getStats
//     framesDecoded advanced within the last STALE_MS).
//
// Hook (hook.js): screen: {sharing: bool,
//   remote: [{participant: 'referrer'|'specialist', framesDecoded, width, height,
//             shown: bool, element: '#remote-screen…'}]}

import { h, showError } from './ui.js';
import { setText } from './i18n.js';
import { registerHookSource } from './hook.js';

const POLL_MS = 500;
const STALE_MS = 2000; // no new frame decoded for this long: the remote screen is hidden

export class ScreenShare {
  constructor(view) {
    this.view = view;
    this.track = null; // our display track while sharing
    this.sendTransceiver = null;
    this.tiles = [];
    this.button = null;
    this.timer = null;
    this.starting = false;
    registerHookSource('screen', async () => ({ screen: await this.snapshot() }));
  }

  reset() {
    this.stop();
    this.stopPolling();
    this.sendTransceiver = null;
    this.tiles = [];
  }

  // ---- DOM ------------------------------------------------------------------------

  /** After SessionView.build(): the share button goes into the session actions. */
  build() {
    const actions = this.view.root.querySelector('.session-actions');
    this.button = h('button#share-screen.btn.btn-secondary.btn-large', {
      attrs: { type: 'button', hidden: true, 'aria-pressed': 'false' },
      dataset: { sharing: 'false' },
      i18n: ['screen.share'],
      on: { click: () => this.toggle() },
    });
    if (actions) actions.prepend(this.button);
    this.render();
  }

  /** After SessionView.buildStage(): one screen tile per remote participant. */
  buildStage() {
    const v = this.view;
    const c = v.consult || {};
    const tile = (id, role) => {
      const person = c[role];
      const video = h(`video#${id}.remote-screen`, { attrs: { autoplay: true, playsinline: true, muted: true } });
      video.muted = true;
      const caption = h('figcaption', {}, h('span.tile-role', { i18n: ['screen.label'] }), ' ',
        h('span.tile-name', { text: person ? (person.name || person.sub) : '', attrs: { dir: 'auto' } }));
      const fig = h('figure.tile.tile-screen', { dataset: { participant: role, shown: 'false' }, attrs: { hidden: true } }, video, caption);
      return { fig, video, role, transceiver: null, frames: 0, lastFrames: 0, lastChange: 0, width: null, height: null };
    };
    if (v.as === 'observer') {
      this.tiles = [tile('remote-screen-referrer', 'referrer'), tile('remote-screen-specialist', 'specialist')];
    } else {
      const other = v.myPart() === 'referrer' ? 'specialist' : 'referrer';
      this.tiles = [tile('remote-screen', other)];
    }
    for (const t of this.tiles) v.el.stage.append(t.fig);
    this.render();
  }

  render() {
    const b = this.button;
    if (!b) return;
    b.hidden = this.view.as !== 'participant' || !!this.view.ended;
    const sharing = !!this.track;
    b.dataset.sharing = String(sharing);
    b.setAttribute('aria-pressed', String(sharing));
    b.disabled = this.starting;
    setText(b, sharing ? 'screen.stop' : 'screen.share');
  }

  // ---- negotiation ------------------------------------------------------------------

  /** During SessionView.negotiate(), after the camera transceivers, before the offer. */
  addTransceivers(pc) {
    const v = this.view;
    this.sendTransceiver = null;
    if (v.as === 'observer') {
      for (const t of this.tiles) t.transceiver = pc.addTransceiver('video', { direction: 'recvonly' });
    } else {
      // One high-resolution layer in three temporal layers (VP8 L1T3): a viewer on a
      // weak link gets fewer frames of it, not a smaller picture (docs/layers.md).
      let tx;
      try {
        tx = pc.addTransceiver(this.track || 'video', { direction: 'sendrecv', sendEncodings: [{ scalabilityMode: 'L1T3' }] });
      } catch {
        tx = pc.addTransceiver(this.track || 'video', { direction: 'sendrecv' });
      }
      this.sendTransceiver = tx;
      if (this.tiles[0]) this.tiles[0].transceiver = tx;
    }
    for (const t of this.tiles) {
      t.frames = 0;
      t.lastFrames = 0;
      t.lastChange = 0;
      const track = t.transceiver && t.transceiver.receiver.track;
      if (track) {
        t.video.srcObject = new MediaStream([track]);
        t.video.play().catch(() => {});
      }
      this.show(t, false);
    }
    this.startPolling();
  }

  peerClosed() {
    this.stopPolling();
    this.sendTransceiver = null;
    for (const t of this.tiles) {
      t.transceiver = null;
      this.show(t, false);
    }
  }

  // ---- sharing ----------------------------------------------------------------------

  async toggle() {
    if (this.track) this.stop();
    else await this.start();
  }

  async start() {
    if (this.track || this.starting || this.view.as !== 'participant') return;
    const md = navigator.mediaDevices;
    if (!md || !md.getDisplayMedia) {
      showError({ code: 'screen_share_unsupported' });
      return;
    }
    this.starting = true;
    this.render();
    let stream = null;
    try {
      stream = await md.getDisplayMedia({ video: true });
    } catch (e) {
      const denied = e && (e.name === 'NotAllowedError' || e.name === 'AbortError');
      showError({ code: denied ? 'screen_share_denied' : 'screen_share_failed', message: e && e.message });
    }
    this.starting = false;
    const track = stream && stream.getVideoTracks()[0];
    if (!track || !this.view.active || this.view.ended) {
      if (stream) for (const tr of stream.getTracks()) tr.stop();
      this.render();
      return;
    }
    try { track.contentHint = 'detail'; } catch { /* older browsers */ }
    // The browser's own "Stop sharing" ends the track.
    track.addEventListener('ended', () => { if (this.track === track) this.stop(); });
    this.track = track;
    this.applyTrack();
    this.render();
  }

  stop() {
    const track = this.track;
    this.track = null;
    if (track) {
      track.stop();
      this.applyTrack();
    }
    this.render();
  }

  applyTrack() {
    const tx = this.sendTransceiver;
    if (!tx || !this.view.pc) return; // a later negotiation adds it
    tx.sender.replaceTrack(this.track).catch(() => {});
  }

  // ---- remote screens ---------------------------------------------------------------

  startPolling() {
    this.stopPolling();
    this.timer = setInterval(() => { this.poll().catch(() => {}); }, POLL_MS);
  }

  stopPolling() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async readStats(t) {
    const out = { framesDecoded: null, width: null, height: null };
    if (!t.transceiver || !this.view.pc) return out;
    try {
      (await t.transceiver.receiver.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && (s.kind === 'video' || s.mediaType === 'video')) {
          out.framesDecoded = (out.framesDecoded || 0) + (s.framesDecoded || 0);
          if (s.frameWidth) {
            out.width = s.frameWidth;
            out.height = s.frameHeight || null;
          }
        }
      });
    } catch { /* closed */ }
    return out;
  }

  async poll() {
    const now = Date.now();
    for (const t of this.tiles) {
      const s = await this.readStats(t);
      const frames = s.framesDecoded || 0;
      if (frames > t.lastFrames) {
        t.lastFrames = frames;
        t.lastChange = now;
      }
      t.frames = frames;
      t.width = t.video.videoWidth || s.width;
      t.height = t.video.videoHeight || s.height;
      this.show(t, !this.view.ended && t.lastChange > 0 && now - t.lastChange < STALE_MS);
    }
  }

  show(t, on) {
    t.fig.hidden = !on;
    t.fig.dataset.shown = String(on);
    if (on && t.video.paused) t.video.play().catch(() => {});
  }

  async snapshot() {
    const remote = [];
    for (const t of this.tiles) {
      const s = await this.readStats(t);
      remote.push({
        participant: t.role,
        framesDecoded: s.framesDecoded,
        width: t.video.videoWidth || s.width,
        height: t.video.videoHeight || s.height,
        shown: !t.fig.hidden,
        element: `#${t.video.id}`,
      });
    }
    return { sharing: !!this.track, remote };
  }
}
