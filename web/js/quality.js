// Low-bandwidth mode and connection quality inside the session view.
//
// 1. Media limits (docs/protocol.md, `joined.media_limits`): a participant's video sender
//    is capped with RTCRtpSender.setParameters — maxBitrate (each simulcast layer its share), a
//    scaleResolutionDownBy that brings the camera's short side (its height, for a
//    landscape camera) to max_video_height or less, degradationPreference
//    'maintain-framerate' — and the audio sender gets priority/networkPriority 'high'
//    (video 'low'), so on a short link speech comes first. Applied on every new peer
//    connection (first join and every reconnect); unsupported parts are skipped.
// 2. Quality: every 2 s from pc.getStats() (read by qualitystats.js) — round-trip time
//    (selected candidate pair, else RTCP), packet loss (inbound packetsLost/packetsReceived
//    deltas, and what the server reports about ours), send/receive bitrate, sent/received
//    resolution and frame rate, the decoder's work, the encoder's qualityLimitationReason.
//    qualitycause.js judges a level (good | fair | poor) and its cause — the network
//    (loss, delay, bandwidth), this device's processor or camera, this device's decoder,
//    or the other side's device — and the badge says the cause in words; the figures are
//    one click on the badge away (#connection-quality-detail).
//    Video frame rates count only for video that is flowing (a remote in audio-only mode
//    sends none; that is not a bad link). A worse level shows at once; a better one after
//    two samples in a row, so the badge does not flicker.
// 3. Audio only (participants): stop sending video (replaceTrack(null) + encodings active
//    false), audio continues; offered by a notice after ~6 s of poor quality, and always
//    by the #audio-only toggle. Kept across reconnects of the same session.
//
// Elements (built here, placed by sessionlayout.js):
//   #connection-quality[data-quality=good|fair|poor][data-cause][aria-expanded]   the
//        badge, a button (hidden until measured); .quality-label (translated: the level
//        for the network, the cause otherwise), title = the detail line; a press shows
//        or hides the detail
//   #connection-quality-detail   why (a sentence), then RTT · loss · available bandwidth ·
//        send/receive kbit/s · sent/received video · decode time
//   #audio-only[data-audio-only=true|false]    participants: the toggle; its label says
//        what a press does ("Audio only" / "Turn video back on")
//   #quality-notice              participants, after ~6 s poor: suggests audio only;
//        #quality-notice-audio-only, #quality-notice-dismiss
//   #local-video-off             (sessionlayout.js) over the local preview while audio only

import { t, has, setText } from './i18n.js';
import { h, announce } from './ui.js';
import { readTraffic, cameraMids } from './qualitystats.js';
import { judge, labelKey } from './qualitycause.js';
import { bitrateShare, layerActive, layerScale } from './layers.js';

export const SAMPLE_MS = 2000;
const POOR_SAMPLES_FOR_NOTICE = 3; // ~6 s
const BETTER_SAMPLES_TO_RISE = 2;
const STALL_SAMPLES = 2; // remote video without a new frame for ~4 s: say so over the tile
const SETTLE_SAMPLES = 2; // frame rates count from the third sample of a connection (~6 s)
const LOW_BANDWIDTH_BPS = 1000000; // caps below this are shown as low-bandwidth mode
const RANK = { good: 0, fair: 1, poor: 2 };

/** getParameters → change → setParameters; false (and no change) when refused. */
async function tweak(sender, change) {
  if (!sender || !sender.getParameters || !sender.setParameters) return false;
  try {
    const p = sender.getParameters();
    if (!p.encodings || !p.encodings.length) p.encodings = [{}];
    change(p);
    await sender.setParameters(p);
    return true;
  } catch {
    return false;
  }
}

/** Priority and network priority of every encoding of a sender. */
function setPriority(sender, level) {
  return tweak(sender, (p) => {
    for (const e of p.encodings) {
      e.priority = level;
      e.networkPriority = level;
    }
  });
}

function round1(x) {
  return x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 10) / 10;
}

export class QualityMonitor {
  /** @param {import('./session.js').SessionView} view */
  constructor(view) {
    this.view = view;
    this.el = null;
    this.timer = null;
    this.reset();
    this.onChange = () => {};
  }

  /** A new session (or none): forget everything, audio only included. */
  reset() {
    this.stop();
    this.limits = null; // {maxVideoBitrate, maxVideoHeight} from joined.media_limits
    this.applied = false;
    this.appliedScale = null;
    this.degradation = null;
    this.audioOnly = false;
    this.toggling = false;
    this.dismissedAt = 0;
    this.resetMeasure();
  }

  /** A new peer connection (or none): stats deltas start over. */
  resetMeasure() {
    this.prev = null; // {pc, at, byId: Map}
    this.samples = 0;
    this.quality = null;
    this.level = null;
    this.cause = 'none';
    this.better = 0;
    this.poorRun = 0;
    this.noticeShown = false;
    this.stalls = new Map(); // remote label -> {frames, still, audioStill, decodedOnce}
  }

  // ---- DOM ------------------------------------------------------------------------

  build() {
    const badge = h('button#connection-quality.quality-badge', {
      attrs: { type: 'button', hidden: true, 'aria-expanded': 'false', 'aria-controls': 'connection-quality-detail' },
      on: { click: () => this.toggleDetail() },
    },
    h('span.quality-bars', { attrs: { 'aria-hidden': 'true' } }, h('span'), h('span'), h('span')),
    h('span.quality-label'));
    const detail = h('span#connection-quality-detail.quality-detail', { attrs: { hidden: true } });
    const audioOnly = h('button#audio-only.btn.btn-secondary.btn-large', {
      attrs: { type: 'button', hidden: true },
      dataset: { audioOnly: 'false' },
      on: { click: () => this.setAudioOnly(!this.audioOnly) },
    }, h('span.audio-only-text'));
    const noticeText = h('p.quality-notice-text');
    const noticeGo = h('button#quality-notice-audio-only.btn.btn-primary', {
      attrs: { type: 'button' }, i18n: ['quality.switchAudioOnly'],
      on: { click: () => this.setAudioOnly(true) },
    });
    const noticeDismiss = h('button#quality-notice-dismiss.btn.btn-secondary', {
      attrs: { type: 'button' }, i18n: ['quality.keepVideo'],
      on: { click: () => this.dismiss() },
    });
    const notice = h('div#quality-notice.quality-notice', { attrs: { hidden: true, role: 'status', 'aria-live': 'polite' } },
      h('span.quality-notice-icon', { attrs: { 'aria-hidden': 'true' } }, '!'),
      noticeText, h('div.quality-notice-actions', {}, noticeGo, noticeDismiss));
    this.el = { badge, detail, audioOnly, notice, noticeText, noticeGo, noticeDismiss };
    this.render();
    return this.el;
  }

  // ---- lifecycle --------------------------------------------------------------------

  /** joined.media_limits → what this page caps its video to (participants only). */
  setLimits(ml) {
    const bitrate = ml && Number(ml.max_video_bitrate);
    const height = ml && Number(ml.max_video_height);
    this.limits = ml ? {
      maxVideoBitrate: Number.isFinite(bitrate) && bitrate > 0 ? bitrate : null,
      maxVideoHeight: Number.isFinite(height) && height > 0 ? height : null,
    } : null;
  }

  start() {
    this.stop();
    this.timer = setInterval(() => { this.sample().catch(() => {}); }, SAMPLE_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  /** The peer connection went away (reconnect, leave, end). */
  peerClosed() {
    this.applied = false;
    this.resetMeasure();
    this.render();
  }

  senders() {
    const v = this.view;
    if (v.as !== 'participant' || !v.remote.length) return {};
    const [ta, tv] = v.remote[0].transceivers || [];
    return { audio: ta && ta.sender, video: tv && tv.sender };
  }

  cameraTrack() {
    const s = this.view.localStream;
    return (s && s.getVideoTracks()[0]) || null;
  }

  /** Scale so the camera's short side ends up at max_video_height or less. */
  scaleFor(track) {
    const max = this.limits && this.limits.maxVideoHeight;
    if (!max) return 1;
    const st = (track && track.getSettings && track.getSettings()) || {};
    const w = Number(st.width) || 640;
    const hgt = Number(st.height) || 480;
    const short = Math.min(w, hgt);
    return short > max ? Math.round((short / max) * 1000) / 1000 : 1;
  }

  /**
   * Cap the video sender and prioritise audio, on the current peer connection. Called
   * before the offer (the first frames already obey) and again once negotiated.
   */
  async applyLimits() {
    const { audio, video } = this.senders();
    if (!audio && !video) {
      this.applied = false;
      return false;
    }
    if (audio) await setPriority(audio, 'high');
    let applied = false;
    const track = this.cameraTrack();
    if (video && track) {
      applied = await this.capVideo(video, track);
      await tweak(video, (p) => { p.degradationPreference = 'maintain-framerate'; });
      this.degradation = video.getParameters().degradationPreference || null;
      await setPriority(video, 'low');
      if (this.audioOnly && video.track) {
        try { await video.replaceTrack(null); } catch { /* closed */ }
      }
    }
    this.applied = applied && !!this.limits;
    this.render();
    return this.applied;
  }

  /**
   * The bitrate cap and the scale on the video sender (on each simulcast layer: its
   * share of the cap, its own scale on top; layers.js); true when the cap holds.
   */
  async capVideo(video, track) {
    const lim = this.limits || {};
    const scale = this.scaleFor(track);
    const changed = await tweak(video, (p) => {
      for (const e of p.encodings) {
        if (lim.maxVideoBitrate) e.maxBitrate = Math.round(lim.maxVideoBitrate * bitrateShare(e));
        e.scaleResolutionDownBy = scale * layerScale(e);
        e.active = !this.audioOnly && layerActive(this.view, e);
      }
    });
    if (!changed) return false;
    const encodings = video.getParameters().encodings || [];
    const e = encodings[encodings.length - 1] || {};
    this.appliedScale = (e.scaleResolutionDownBy ?? scale) / layerScale(e);
    const total = encodings.reduce((sum, x) => sum + (x.maxBitrate || 0), 0);
    return !lim.maxVideoBitrate || (total > 0 && total <= lim.maxVideoBitrate);
  }

  // ---- audio only -------------------------------------------------------------------

  async setAudioOnly(on) {
    const v = this.view;
    if (v.as !== 'participant' || v.ended || this.toggling) return;
    this.toggling = true;
    this.audioOnly = !!on;
    this.render();
    try {
      const { video } = this.senders();
      const track = this.cameraTrack();
      if (video) {
        if (on) {
          try { await video.replaceTrack(null); } catch { /* closed */ }
          await tweak(video, (p) => { p.encodings.forEach((e) => { e.active = false; }); });
        } else {
          if (track) {
            track.enabled = true;
            try { await video.replaceTrack(track); } catch { /* closed */ }
          }
          await this.applyLimits(); // active again, with the caps
        }
      }
    } finally {
      this.toggling = false;
      if (on) this.el.notice.hidden = true;
      this.render();
      if (on) this.el.audioOnly.focus();
    }
  }

  /** The figures behind the badge, shown or hidden by a press on it. */
  toggleDetail() {
    this.detailOpen = !this.detailOpen;
    this.render();
  }

  dismiss() {
    this.dismissedAt = Date.now();
    this.noticeShown = false;
    this.render();
    if (this.el.audioOnly && !this.el.audioOnly.hidden) this.el.audioOnly.focus();
  }

  // ---- measuring ----------------------------------------------------------------------

  async sample() {
    if (this.sampling) return;
    this.sampling = true;
    try {
      await this.measure();
    } finally {
      this.sampling = false;
    }
  }

  async measure() {
    const v = this.view;
    const pc = v.pc;
    if (!v.active || v.ended || !pc || pc.connectionState !== 'connected') {
      if (this.quality) {
        this.resetMeasure();
        this.render();
      }
      return;
    }
    const report = await pc.getStats();
    if (pc !== v.pc) return;
    const now = performance.now();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    const prev = this.prev && this.prev.pc === pc ? this.prev : null;
    this.prev = { pc, at: now, byId };
    if (!prev) return; // deltas need two samples
    const dt = (now - prev.at) / 1000;
    if (dt <= 0.2) return;
    const traffic = readTraffic(byId, prev.byId, dt, cameraMids(v.remote));
    this.record(traffic, dt);
    this.trackStalls(traffic.streams);
    this.render();
    this.onChange();
  }

  /** One sample's level and figures (thresholds in the header). */
  record(tr, dt) {
    const downLoss = tr.lost + tr.received > 0 ? (tr.lost / (tr.lost + tr.received)) * 100 : 0;
    const lossPct = Math.max(downLoss, tr.upstreamLoss || 0);
    const sent = tr.sent;
    const sendingVideo = this.view.as === 'participant' && !this.audioOnly && sent && sent.active && sent.fps > 0;
    // Frame rates are judged once video has settled (the first seconds of a call ramp up).
    this.samples = (this.samples || 0) + 1;
    const settled = this.samples > SETTLE_SAMPLES;
    const judged = judge({
      lossPct, rttMs: tr.rttMs,
      sent: sendingVideo ? (settled ? sent : { ...sent, fps: null }) : null,
      incoming: settled ? tr.incoming : [],
    });
    const raw = judged.level;
    this.updateLevel(judged);
    const slowest = tr.incoming.reduce((a, b) => (a === null || b.fps < a.fps ? b : a), null);
    this.quality = {
      level: this.level,
      cause: this.cause,
      label: labelKey({ level: this.level, cause: this.cause }),
      raw,
      rawCause: judged.cause,
      decodeMs: slowest && slowest.decodeMs !== null ? round1(slowest.decodeMs) : null,
      recvFramesFps: slowest && slowest.receivedFps !== null ? round1(slowest.receivedFps) : null,
      rttMs: tr.rttMs === null ? null : Math.round(tr.rttMs),
      lossPct: round1(lossPct),
      downLossPct: round1(downLoss),
      upLossPct: round1(tr.upstreamLoss),
      sendKbps: Math.round((tr.sendBytes * 8) / dt / 1000),
      recvKbps: Math.round((tr.recvBytes * 8) / dt / 1000),
      availableKbps: tr.availableKbps === null ? null : Math.round(tr.availableKbps),
      sentHeight: sent && sent.height && !this.audioOnly ? sent.height : null,
      sentWidth: sent && sent.width && !this.audioOnly ? sent.width : null,
      sentFps: sendingVideo ? round1(sent.fps) : null,
      limitation: sent ? sent.limitation : null,
      recvHeight: tr.recvHeight,
      recvWidth: tr.recvWidth,
      recvFps: tr.recvFpsAll.length ? round1(Math.min(...tr.recvFpsAll)) : null,
      at: Date.now(),
    };
  }

  /** Worse at once; better only after BETTER_SAMPLES_TO_RISE samples in a row. The
   *  cause goes with the level it explains. */
  updateLevel({ level: raw, cause }) {
    if (this.level === null || RANK[raw] >= RANK[this.level]) {
      this.level = raw;
      this.cause = cause;
      this.better = 0;
    } else if (++this.better >= BETTER_SAMPLES_TO_RISE) {
      this.level = raw;
      this.cause = cause;
      this.better = 0;
    }
    // Audio only helps with the network, not with a busy device.
    const network = ['loss', 'delay', 'bandwidth'].includes(cause);
    this.poorRun = raw === 'poor' && network ? this.poorRun + 1 : 0;
  }

  /** Per remote tile: is its video frozen (and is its audio still arriving)? */
  trackStalls(stats) {
    for (const r of this.view.remote) {
      const [ta, tv] = r.transceivers || [];
      const vs = tv && stats.get(tv.mid);
      const as = ta && stats.get(`audio:${ta.mid}`);
      const st = this.stalls.get(r.label) || { frames: 0, still: 0, decodedOnce: false, audio: false };
      if (vs) {
        if (vs.frames > st.frames) {
          st.still = 0;
          st.decodedOnce = true;
        } else st.still += 1;
        st.frames = vs.frames;
      }
      st.audio = !!(as && as.packets > 0);
      this.stalls.set(r.label, st);
    }
  }

  /** 'videoPaused' (audio still arrives), 'mediaStalled' (nothing arrives) or null. */
  stallOf(r) {
    const st = this.stalls.get(r.label);
    if (!st || !st.decodedOnce || st.still < STALL_SAMPLES) return null;
    return st.audio ? 'videoPaused' : 'mediaStalled';
  }

  // ---- rendering ----------------------------------------------------------------------

  /** The detail line, one translated piece per measure ({tooltip} adds the limit). */
  detailParts({ tooltip = false } = {}) {
    const q = this.quality;
    if (!q) return [];
    const parts = [];
    if (q.rttMs !== null) parts.push(t('quality.rtt', { ms: q.rttMs }));
    parts.push(t('quality.loss', { pct: (q.lossPct ?? 0).toFixed(1) }));
    if (q.availableKbps !== null && this.view.as === 'participant') parts.push(t('quality.available', { kbps: q.availableKbps }));
    if (this.view.as === 'participant') parts.push(t('quality.send', { kbps: q.sendKbps }));
    parts.push(t('quality.receive', { kbps: q.recvKbps }));
    if (this.view.as === 'participant') {
      if (this.audioOnly) parts.push(t('quality.sentNone'));
      else if (q.sentHeight) parts.push(t('quality.sentVideo', { size: `${q.sentHeight}p`, fps: Math.round(q.sentFps || 0) }));
    }
    if (this.view.as === 'participant' && !this.audioOnly && q.limitation && q.limitation !== 'none' && has(`quality.limitedBy.${q.limitation}`)) {
      parts.push(t(`quality.limitedBy.${q.limitation}`));
    }
    if (q.recvHeight) parts.push(t('quality.receivedVideo', { size: `${q.recvHeight}p`, fps: Math.round(q.recvFps || 0) }));
    if (q.decodeMs !== null) parts.push(t('quality.decode', { ms: q.decodeMs }));
    const lim = this.limits;
    if (this.view.as === 'participant' && lim && lim.maxVideoBitrate && (tooltip || lim.maxVideoBitrate < LOW_BANDWIDTH_BPS)) {
      const args = { kbps: Math.round(lim.maxVideoBitrate / 1000), size: lim.maxVideoHeight ? `${lim.maxVideoHeight}p` : '—' };
      parts.push(t(lim.maxVideoBitrate < LOW_BANDWIDTH_BPS ? 'quality.lowBandwidth' : 'quality.limit', args));
    }
    return parts;
  }

  render() {
    const el = this.el;
    if (!el) return;
    const v = this.view;
    const live = v.active && !v.ended;
    const q = live ? this.quality : null;
    const participant = live && v.as === 'participant';
    this.renderBadge(q);
    this.renderAudioOnly(participant);
    this.renderNotice(participant, q);
    if (v.el && v.el.localOff) {
      v.el.localOff.hidden = !(participant && this.audioOnly);
    }
    if (v.root) {
      v.root.dataset.audioOnly = String(!!(participant && this.audioOnly));
      if (q) v.root.dataset.quality = q.level;
      else delete v.root.dataset.quality;
    }
  }

  renderBadge(q) {
    const el = this.el;
    el.badge.hidden = !q;
    el.detail.hidden = !q || !this.detailOpen;
    el.badge.setAttribute('aria-expanded', String(!!(q && this.detailOpen)));
    if (!q) {
      delete el.badge.dataset.quality;
      delete el.badge.dataset.cause;
      el.badge.removeAttribute('title');
      return;
    }
    el.badge.dataset.quality = q.level;
    el.badge.dataset.cause = q.cause;
    // Rewritten (and said to screen readers) only when it changes.
    const label = el.badge.querySelector('.quality-label');
    if (label.dataset.i18n !== q.label || label.textContent !== t(q.label)) {
      const changed = label.dataset.i18n !== q.label;
      setText(label, q.label);
      if (changed) announce(q.label);
    }
    // Why, then each measure, whole when the line wraps (numbers and units together).
    el.detail.replaceChildren(h('span.quality-why', { i18n: [`quality.why.${q.cause}`] }), ' ');
    this.detailParts().forEach((text, i) => {
      if (i) el.detail.append(t('quality.separator'));
      el.detail.append(h('span.quality-part', { text }));
    });
    el.badge.title = `${t(q.label)}\n${this.detailParts({ tooltip: true }).join('\n')}`;
  }

  renderAudioOnly(participant) {
    const button = this.el.audioOnly;
    button.hidden = !participant;
    button.disabled = this.toggling;
    button.dataset.audioOnly = String(this.audioOnly);
    setText(button.querySelector('.audio-only-text'), this.audioOnly ? 'quality.videoBackOn' : 'quality.audioOnly');
    button.title = t(this.audioOnly ? 'quality.videoBackOnHelp' : 'quality.audioOnlyHelp');
  }

  // The suggestion: ~6 s of poor quality, while sending video, not just dismissed.
  renderNotice(participant, q) {
    const el = this.el;
    const recentlyDismissed = Date.now() - this.dismissedAt < 60000;
    if (participant && !this.audioOnly && this.poorRun >= POOR_SAMPLES_FOR_NOTICE && !recentlyDismissed) this.noticeShown = true;
    if (!participant || this.audioOnly || (q && q.level === 'good') || recentlyDismissed) this.noticeShown = false;
    el.notice.hidden = !this.noticeShown;
    if (this.noticeShown) setText(el.noticeText, 'quality.poorNotice');
  }

  snapshot() {
    const q = this.view.active && !this.view.ended ? this.quality : null;
    const lim = this.limits;
    return {
      quality: q ? { ...q, detailOpen: !!this.detailOpen } : { level: null, cause: null, rttMs: null, lossPct: null, sendKbps: null, recvKbps: null, sentHeight: null, recvHeight: null, recvFps: null },
      limits: {
        maxVideoBitrate: lim ? lim.maxVideoBitrate : null,
        maxVideoHeight: lim ? lim.maxVideoHeight : null,
        applied: !!(this.applied && this.view.pc),
        scaleResolutionDownBy: this.applied ? this.appliedScale : null,
        degradationPreference: this.applied ? this.degradation || null : null,
      },
      audioOnly: !!(this.view.as === 'participant' && this.audioOnly),
      qualityNotice: !!(this.el && !this.el.notice.hidden),
    };
  }
}
