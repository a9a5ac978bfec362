// The session view shared by the three pages: join over the WebSocket, negotiate media
// exactly as docs/protocol.md says, show video, roster, connection state, leave/end.
//
// Elements (inside #session-view, built here):
//   #session-view[data-session-id][data-as][data-state]   the whole view
//   #connection-state[data-state][data-pc-state][data-server-state]
//        data-state: connecting | connected | reconnecting | failed | ended
//   #connection-detail        browser / server media states in words
//   #leave                    leave the session (it stays open for the others)
//   #end-session, #end-session-confirm, #end-session-cancel   participants: end for all
//   #observer-notice          participants: who is observing (hidden when nobody)
//   #roster                   ul; li.roster-entry[data-sub][data-role][data-as]
//   participants: #remote-video, #local-video (muted preview), #remote-waiting
//   observers:    #remote-video-referrer, #remote-video-specialist,
//                 #remote-waiting-referrer, #remote-waiting-specialist
//   #enable-audio             shown when the browser blocked autoplay with sound
//   #session-ended[data-reason], #session-back   after session.ended / end / session.replaced
//   #session-duration
//   Low-bandwidth mode and quality (quality.js): #connection-quality[data-quality],
//   #connection-quality-detail, #audio-only[data-audio-only], #quality-notice,
//   #quality-notice-audio-only, #quality-notice-dismiss, #local-video-off;
//   #session-view[data-quality][data-audio-only]. Over a remote tile, #remote-waiting*
//   also says when its video stopped (paused or stalled) while the session goes on.
//   Recording (sessionrecording.js): #record-request, #recording-bar,
//   #recording-indicator[data-state], #recording-requested, #record-stop,
//   #recording-withdraw, #recording-consent, #recording-consent-yes,
//   #recording-consent-no; #session-view[data-recording] is the recording state
//   (idle | requested | recording | paused | stopped)
//   Screen share (screenshare.js): #share-screen (participants), #remote-screen
//   (participants), #remote-screen-referrer / #remote-screen-specialist (observers)

import { t, has, setText, onLangChange } from './i18n.js';
import { api, ApiError } from './api.js';
import { h, showError, showNotice, urgencyBadge, specialtyEl, ltr, waitingEl } from './ui.js';
import { RecordingPanel } from './sessionrecording.js';
import { QualityMonitor } from './quality.js';
import { ScreenShare } from './screenshare.js';

const ICE_GATHER_TIMEOUT_MS = 3000;
const FATAL_JOIN_CODES = new Set([
  'session_not_found', 'consult_not_found', 'invalid_state', 'forbidden', 'too_many_observers',
  'bad_sdp', 'observer_cannot_send', 'token_expired', 'token_invalid', 'webrtc_unsupported',
]);

function waitForIceGathering(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve(true);
  return new Promise((resolve) => {
    let timer = null;
    const check = () => {
      if (pc.iceGatheringState === 'complete') done(true);
    };
    const done = (value) => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve(value);
    };
    timer = setTimeout(() => done(false), ms);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

// The camera is encoded in three temporal layers (VP8 L1T3): a frame lost on a bad link
// then costs only the few frames that refer to it, and the receiver goes on with the
// next base-layer frame instead of freezing until a repair or a keyframe crosses the
// link again (docs/benchmarks.md, impaired link). A browser that cannot encode it
// sends one layer.
function addCameraTransceiver(pc, track, streams) {
  const init = { direction: 'sendrecv', streams };
  try {
    return pc.addTransceiver(track, { ...init, sendEncodings: [{ scalabilityMode: 'L1T3' }] });
  } catch {
    return pc.addTransceiver(track, init);
  }
}

function eyeIcon() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'icon');
  const p = document.createElementNS(ns, 'path');
  p.setAttribute('d', 'M12 5C6.5 5 2.3 8.6 1 12c1.3 3.4 5.5 7 11 7s9.7-3.6 11-7c-1.3-3.4-5.5-7-11-7zm0 11.5A4.5 4.5 0 1 1 12 7.5a4.5 4.5 0 0 1 0 9zm0-7a2.5 2.5 0 1 0 0 5 2.5 2.5 0 0 0 0-5z');
  p.setAttribute('fill', 'currentColor');
  svg.append(p);
  return svg;
}

export class SessionView {
  /**
   * @param {object} o
   * @param {HTMLElement} o.root      the (empty) #session-view section
   * @param {Signaling}   o.signaling
   * @param {object}      o.config    GET /api/config
   * @param {object}      o.me        GET /api/me
   * @param {Function}    o.onExit    called with {sessionId, reason} when the view closes
   */
  constructor({ root, signaling, config, me, onExit }) {
    this.root = root;
    this.sig = signaling;
    this.config = config || {};
    this.me = me || {};
    this.onExit = onExit || (() => {});
    this.recording = new RecordingPanel(this);
    this.quality = new QualityMonitor(this);
    this.quality.onChange = () => this.updateOverlays();
    this.screen = new ScreenShare(this);
    this.reset();
    this.build();

    this.sig.addEventListener('roster', (e) => {
      if (this.active && e.detail.session_id === this.sessionId) this.setRoster(e.detail.roster);
    });
    this.sig.addEventListener('session.ended', (e) => {
      if (this.active && e.detail.session_id === this.sessionId) this.handleEnded(e.detail.reason || 'ended');
    });
    this.sig.addEventListener('session.replaced', (e) => {
      // The same participant joined from another window or device: media moved there.
      // Do not rejoin from here (the two would keep replacing each other).
      if (this.active && e.detail.session_id === this.sessionId) this.handleEnded('replaced');
    });
    this.sig.addEventListener('recording.state', (e) => {
      if (this.active && !this.ended && e.detail.session_id === this.sessionId) this.recording.set(e.detail);
    });
    this.sig.addEventListener('media.state', (e) => {
      if (!this.active || this.ended) return;
      if (e.detail.session_id && e.detail.session_id !== this.sessionId) return;
      this.serverState = e.detail.state || null;
      this.updateConnState();
      if (this.serverState === 'failed') this.scheduleRecovery('server');
    });
    this.sig.addEventListener('consult.updated', (e) => {
      const c = e.detail.consult;
      if (!this.active || this.ended || !c) return;
      if (c.session_id === this.sessionId || (this.consult && c.id === this.consult.id)) {
        this.consult = { ...(this.consult || {}), ...c };
        if (['ended', 'cancelled', 'expired'].includes(c.state)) {
          // session.ended (with its reason) normally follows at once; this is the fallback.
          const sid = this.sessionId;
          setTimeout(() => {
            if (this.active && !this.ended && this.sessionId === sid) this.handleEnded('consult_ended');
          }, 2000);
        }
      }
    });
    this.sig.addEventListener('ready', (e) => {
      // A new signaling connection has no joined session: join again on a new peer.
      // (Also the first connection, when join() was called before it was up.)
      if (this.active && !this.ended && !this.leaving && (e.detail.reconnected || this.needsJoin)) this.rejoin();
    });
    this.sig.addEventListener('state', () => {
      if (this.active && !this.ended) this.updateConnState();
    });
    onLangChange(() => {
      if (this.active) {
        this.renderRoster();
        this.updateConnState();
        this.recording.render();
        this.quality.render();
        this.updateOverlays();
      }
    });
  }

  reset() {
    this.active = false;
    this.sessionId = null;
    this.as = null;
    this.part = null;
    this.consult = null;
    this.roster = [];
    this.pc = null;
    this.remote = [];
    this.pcState = null;
    this.serverState = null;
    this.ended = null;
    this.leaving = false;
    this.needsJoin = false;
    this.gen = 0;
    this.failure = null;
    clearTimeout(this.recoveryTimer);
    this.recoveryTimer = null;
    this.recoveryAttempt = 0;
    this.notHereAttempts = 0;
    clearInterval(this.overlayTimer);
    this.overlayTimer = null;
    this.recording.reset();
    this.quality.reset();
    this.screen.reset();
  }

  // ---- DOM ------------------------------------------------------------------------

  build() {
    const r = this.root;
    r.replaceChildren();
    r.hidden = true;
    r.classList.add('session-view');

    this.el = {};
    const conn = h('div#connection-state.conn-badge', { dataset: { state: 'connecting' }, attrs: { role: 'status', 'aria-live': 'polite' } },
      h('span.dot', { attrs: { 'aria-hidden': 'true' } }), h('span.conn-label', { i18n: ['media.connecting'] }));
    const detail = h('span#connection-detail.conn-detail');
    const leave = h('button#leave.btn.btn-secondary.btn-large', { attrs: { type: 'button' }, i18n: ['session.leave'], on: { click: () => this.leave() } });
    const end = h('button#end-session.btn.btn-danger.btn-large', { attrs: { type: 'button', hidden: true }, i18n: ['session.end'], on: { click: () => this.askEnd(true) } });
    const endConfirm = h('button#end-session-confirm.btn.btn-danger.btn-large', { attrs: { type: 'button', hidden: true }, i18n: ['session.endConfirm'], on: { click: () => this.end() } });
    const endCancel = h('button#end-session-cancel.btn.btn-secondary.btn-large', { attrs: { type: 'button', hidden: true }, i18n: ['session.endKeep'], on: { click: () => this.askEnd(false) } });

    const info = h('div.session-info');
    const duration = h('span#session-duration.session-duration');
    const rec = this.recording.build();
    const qual = this.quality.build();
    const bar = h('div.session-bar', {},
      info,
      h('div.session-status', {}, conn, qual.badge, detail, duration, qual.detail),
      h('div.session-actions', {}, qual.audioOnly, rec.request, leave, end, endConfirm, endCancel));

    const observerNotice = h('div#observer-notice.observer-notice', { attrs: { hidden: true, role: 'status', 'aria-live': 'polite' } },
      eyeIcon(), h('span.observer-notice-text'));
    const stage = h('div#stage.stage');
    const enableAudio = h('button#enable-audio.btn.btn-primary.btn-large', { attrs: { type: 'button', hidden: true }, i18n: ['session.enableAudio'], on: { click: () => this.enableAudio() } });
    const roster = h('ul#roster.roster', { attrs: { 'aria-live': 'polite' } });
    const side = h('aside.session-side', {},
      h('h2.roster-title', { i18n: ['session.rosterTitle'] }), roster,
      h('div.session-case'));
    const ended = h('div#session-ended.session-ended', { attrs: { hidden: true, role: 'alert' } },
      h('p.session-ended-text'),
      h('button#session-back.btn.btn-primary.btn-large', { attrs: { type: 'button' }, i18n: ['session.back'], on: { click: () => this.exit(this.ended ? this.ended.reason : 'ended') } }));

    r.append(bar, qual.notice, rec.bar, rec.consent, observerNotice, ended, rec.announce,
      h('div.session-body', {}, h('div.stage-wrap', {}, stage, rec.badge, enableAudio), side));
    Object.assign(this.el, { conn, detail, leave, end, endConfirm, endCancel, info, duration, observerNotice, stage, enableAudio, roster, side, ended });
    this.screen.build();
  }

  buildStage() {
    const stage = this.el.stage;
    stage.replaceChildren();
    stage.dataset.as = this.as;
    const c = this.consult || {};
    this.remote = [];
    const tile = (id, waitingId, captionKey, person, role) => {
      const video = h(`video#${id}.remote-video`, { attrs: { autoplay: true, playsinline: true } });
      const caption = h('figcaption', {}, h('span.tile-role', { i18n: [captionKey] }), ' ',
        h('span.tile-name', { text: person ? (person.name || person.sub) : '', attrs: { dir: 'auto' } }));
      const waiting = h(`div#${waitingId}.tile-waiting`, { attrs: { role: 'status' } });
      const fig = h('figure.tile.tile-remote', { dataset: { participant: role } }, video, waiting, caption);
      video.addEventListener('resize', () => this.updateOverlays());
      video.addEventListener('loadeddata', () => this.updateOverlays());
      return { fig, video, waiting, role, person };
    };
    if (this.as === 'observer') {
      const a = tile('remote-video-referrer', 'remote-waiting-referrer', 'roles.referrer', c.referrer, 'referrer');
      const b = tile('remote-video-specialist', 'remote-waiting-specialist', 'roles.specialist', c.specialist, 'specialist');
      stage.append(a.fig, b.fig);
      this.remote = [
        { label: 'referrer', ...a, transceivers: [] },
        { label: 'specialist', ...b, transceivers: [] },
      ];
      this.el.local = null;
      this.el.localOff = null;
    } else {
      const other = this.myPart() === 'referrer' ? 'specialist' : 'referrer';
      const a = tile('remote-video', 'remote-waiting', `roles.${other}`, c[other], other);
      const local = h('video#local-video.local-video', { attrs: { autoplay: true, playsinline: true, muted: true } });
      local.muted = true;
      const localOff = h('div#local-video-off.tile-waiting.tile-off', { attrs: { hidden: true }, i18n: ['quality.localOff'] });
      const localFig = h('figure.tile.tile-local', {}, local, localOff, h('figcaption', { i18n: ['session.you'] }));
      stage.append(a.fig, localFig);
      this.remote = [{ label: 'remote', ...a, transceivers: [] }];
      this.el.local = local;
      this.el.localOff = localOff;
    }
    this.screen.buildStage();
    this.quality.render();
    this.renderInfo();
  }

  myPart() {
    if (this.part) return this.part;
    const c = this.consult || {};
    if (c.referrer && c.referrer.sub === this.me.sub) return 'referrer';
    if (c.specialist && c.specialist.sub === this.me.sub) return 'specialist';
    return this.me.role === 'specialist' ? 'specialist' : 'referrer';
  }

  renderInfo() {
    const c = this.consult || {};
    const info = this.el.info;
    info.replaceChildren();
    if (c.urgency) info.append(urgencyBadge(c.urgency));
    if (c.specialty) info.append(specialtyEl(c.specialty, 'strong'));
    if (c.patient_ref) info.append(h('span.info-item', {}, h('span.field-label', { i18n: ['consult.patientRef'] }), ' ', ltr(c.patient_ref)));
    if (c.facility) info.append(h('span.info-item', {}, h('span.field-label', { i18n: ['consult.facility'] }), ' ', ltr(c.facility)));
    const caseBox = this.el.side.querySelector('.session-case');
    caseBox.replaceChildren();
    if (c.summary) {
      caseBox.append(h('h2', { i18n: ['session.caseTitle'] }), h('p.summary', { text: c.summary, attrs: { dir: 'auto' } }));
    }
    this.el.duration.replaceChildren();
    const since = c.accepted_at || c.created_at;
    if (since) this.el.duration.append(h('span.field-label', { i18n: ['session.duration'] }), ' ', waitingEl(since));
  }

  // ---- roster ---------------------------------------------------------------------

  setRoster(roster) {
    this.roster = Array.isArray(roster) ? roster : [];
    this.renderRoster();
    this.updateOverlays();
  }

  renderRoster() {
    const ul = this.el.roster;
    ul.replaceChildren();
    const sorted = this.roster.slice().sort((a, b) => (a.as === b.as ? 0 : a.as === 'participant' ? -1 : 1));
    for (const p of sorted) {
      const li = h('li.roster-entry', { dataset: { sub: p.sub, role: p.role, as: p.as } });
      if (p.as === 'observer') li.append(eyeIcon());
      li.append(h('span.roster-name', { text: p.name || p.sub, attrs: { dir: 'auto' } }));
      if (p.sub === this.me.sub) li.append(h('span.roster-you', { i18n: ['session.youSuffix'] }));
      li.append(h(`span.badge.role-badge.role-${p.role}`, { i18n: [`roles.${p.role}`] }));
      if (p.as === 'observer') li.append(h('span.badge.observer-badge', { i18n: ['session.observing'] }));
      ul.append(li);
    }
    if (!sorted.length && !this.ended) ul.append(h('li.roster-empty', { i18n: ['session.rosterEmpty'] }));

    const observers = this.roster.filter((p) => p.as === 'observer' && p.sub !== this.me.sub);
    const notice = this.el.observerNotice;
    const text = notice.querySelector('.observer-notice-text');
    if (this.as === 'observer') {
      setText(text, 'session.youObserve');
      notice.hidden = false;
      notice.dataset.count = String(observers.length);
    } else if (observers.length) {
      const names = observers.map((p) => p.name || p.sub).join(t('list.separator'));
      setText(text, 'session.observedBy', { names });
      notice.hidden = false;
      notice.dataset.count = String(observers.length);
    } else {
      notice.hidden = true;
      notice.dataset.count = '0';
    }
  }

  presentParticipant(role) {
    return this.roster.some((p) => p.as === 'participant' && p.sub !== this.me.sub && (role === null || p.role === role || this.roleOf(p) === role));
  }

  roleOf(p) {
    const c = this.consult || {};
    if (c.referrer && p.sub === c.referrer.sub) return 'referrer';
    if (c.specialist && p.sub === c.specialist.sub) return 'specialist';
    return p.role;
  }

  updateOverlays() {
    for (const r of this.remote) {
      let key = null;
      let args;
      const name = r.person ? (r.person.name || r.person.sub) : t(`roles.${r.role}`);
      if (this.ended) key = null;
      else if (!this.presentParticipant(r.role)) {
        key = 'session.waitingFor';
        args = { name };
      } else if (!r.video.videoWidth) {
        key = 'session.connectingTo';
        args = { name };
      } else if (this.quality.stallOf(r)) {
        // A frozen last frame must not pass for live video.
        key = `session.${this.quality.stallOf(r)}`;
        args = { name };
      }
      if (key) {
        setText(r.waiting, key, args);
        r.waiting.hidden = false;
      } else r.waiting.hidden = true;
    }
  }

  // ---- joining and media ----------------------------------------------------------

  /** Join a session and start media. Resolves once the offer/answer is done (or failed). */
  async join(sessionId, { consult = null } = {}) {
    if (this.active && this.sessionId === sessionId) return;
    if (this.active) throw new ApiError('already_in_session', '');
    this.reset();
    this.build();
    this.active = true;
    this.sessionId = sessionId;
    this.consult = consult;
    this.root.dataset.sessionId = sessionId;
    this.root.dataset.state = 'joining';
    this.root.hidden = false;
    // The call opens at its top, wherever the page was scrolled to before (the
    // referrer's form, a long queue): its controls are never left under the top bar.
    this.root.scrollIntoView({ block: 'start' });
    this.overlayTimer = setInterval(() => this.updateOverlays(), 1000);
    this.updateConnState();
    await this.attempt();
  }

  async rejoin() {
    if (!this.active || this.ended) return;
    this.closePeer();
    this.updateConnState();
    await this.attempt();
  }

  async attempt() {
    const gen = ++this.gen;
    this.failure = null;
    if (!this.sig.ready) {
      // Joined as soon as the signaling connection is up ('ready' above).
      this.needsJoin = true;
      this.updateConnState();
      return;
    }
    this.needsJoin = false;
    try {
      const joined = await this.sig.request('join', { session_id: this.sessionId });
      if (gen !== this.gen || !this.active) return;
      this.as = joined.as === 'observer' ? 'observer' : 'participant';
      if (joined.part === 'referrer' || joined.part === 'specialist') this.part = joined.part;
      if (joined.consult) this.consult = joined.consult;
      this.root.dataset.as = this.as;
      this.root.dataset.state = 'joined';
      this.el.end.hidden = this.as !== 'participant';
      if (!this.remote.length || this.el.stage.dataset.as !== this.as) this.buildStage();
      else this.renderInfo();
      this.setRoster(joined.roster);
      if (joined.recording) this.recording.set(joined.recording);
      else this.recording.render();
      this.quality.setLimits(joined.media_limits || null);
      await this.negotiate(gen);
      this.recoveryAttempt = 0;
      this.notHereAttempts = 0;
    } catch (err) {
      if (gen !== this.gen || !this.active || this.ended) return;
      this.onAttemptError(err);
    }
  }

  onAttemptError(err) {
    const code = err && err.code;
    if (code === 'disconnected' || code === 'not_connected') {
      // The socket dropped: 'ready' (reconnected) triggers a new attempt.
      this.needsJoin = true;
      this.updateConnState();
      return;
    }
    if (code === 'already_joined') {
      // This connection still has the old join: start over on a fresh socket.
      this.sig.reconnectNow();
      return;
    }
    showError(err);
    if (code === 'session_not_here' && this.notHereAttempts < 5) {
      // The media lives on another node; a new connection may be routed there.
      this.notHereAttempts += 1;
      this.failure = code;
      this.updateConnState();
      clearTimeout(this.recoveryTimer);
      this.recoveryTimer = setTimeout(() => this.sig.reconnectNow(), 1000 * this.notHereAttempts);
      return;
    }
    if (code === 'session_not_found' || code === 'invalid_state' || code === 'consult_not_found') {
      this.failure = code;
      this.handleEnded('not_available');
      return;
    }
    if (FATAL_JOIN_CODES.has(code) || code === 'session_not_here') {
      // Retrying cannot help (forbidden, too many observers, unusable SDP…): back to the
      // list with the error banner showing.
      this.exit('error');
      return;
    }
    // timeout, internal, store_unavailable, …: try again on a fresh connection.
    this.failure = code || 'unknown';
    this.scheduleRecovery('join');
  }

  async getMedia() {
    const md = navigator.mediaDevices;
    if (!md || !md.getUserMedia) {
      showError({ code: 'media_unsupported' });
      return null;
    }
    const video = { width: { ideal: 640 }, height: { ideal: 480 } };
    try {
      return await md.getUserMedia({ audio: true, video });
    } catch (e) {
      if (e && (e.name === 'NotAllowedError' || e.name === 'SecurityError')) {
        showError({ code: 'camera_denied', message: e.message });
        return null;
      }
      for (const c of [{ audio: true }, { video }]) {
        try {
          const s = await md.getUserMedia(c);
          showError({ code: c.audio ? 'camera_unavailable' : 'microphone_unavailable' });
          return s;
        } catch { /* next */ }
      }
      showError({ code: 'media_unavailable', message: e && e.message });
      return null;
    }
  }

  async negotiate(gen) {
    if (typeof RTCPeerConnection === 'undefined') throw new ApiError('webrtc_unsupported', '');
    this.closePeer();
    const pc = new RTCPeerConnection({ iceServers: Array.isArray(this.config.ice_servers) ? this.config.ice_servers : [] });
    this.pc = pc;
    this.pcState = pc.connectionState || 'new';
    pc.addEventListener('connectionstatechange', () => {
      if (pc !== this.pc) return;
      this.pcState = pc.connectionState;
      this.updateConnState();
      if (this.pcState === 'failed') this.scheduleRecovery('pc');
      else if (this.pcState === 'disconnected') this.scheduleRecovery('pc', 8000);
      else if (this.pcState === 'connected') {
        clearTimeout(this.recoveryTimer);
        this.recoveryAttempt = 0;
        this.quality.sample().catch(() => {}); // the baseline: a level 2 s later
      }
    });
    if (!('connectionState' in pc)) {
      pc.addEventListener('iceconnectionstatechange', () => {
        if (pc !== this.pc) return;
        const s = pc.iceConnectionState;
        this.pcState = s === 'completed' ? 'connected' : s;
        this.updateConnState();
        if (s === 'failed') this.scheduleRecovery('pc');
      });
    }

    if (this.as === 'observer') {
      const tr = ['audio', 'video', 'audio', 'video'].map((kind) => pc.addTransceiver(kind, { direction: 'recvonly' }));
      this.remote[0].transceivers = [tr[0], tr[1]];
      this.remote[1].transceivers = [tr[2], tr[3]];
    } else {
      if (!this.localStream) {
        this.localStream = await this.getMedia();
        if (gen !== this.gen || !this.active) {
          this.stopLocal();
          return;
        }
      }
      const s = this.localStream;
      const streams = s ? [s] : [];
      const audio = s && s.getAudioTracks()[0];
      const video = s && s.getVideoTracks()[0];
      const ta = pc.addTransceiver(audio || 'audio', { direction: 'sendrecv', streams });
      const tv = addCameraTransceiver(pc, video || 'video', streams);
      this.remote[0].transceivers = [ta, tv];
      // Low-bandwidth mode: cap the video and put audio first from the first frame on.
      await this.quality.applyLimits();
      if (gen !== this.gen || pc !== this.pc) return;
      if (this.el.local) {
        this.el.local.srcObject = s;
        this.el.local.muted = true;
        if (s) this.el.local.play().catch(() => {});
      }
    }
    // Screen share m-line(s) after the cameras' (docs/protocol.md): always negotiated.
    this.screen.addTransceivers(pc);
    for (const r of this.remote) this.attachRemote(r);
    pc.addEventListener('track', (e) => {
      if (pc !== this.pc) return;
      const r = this.remote.find((x) => x.transceivers.includes(e.transceiver));
      if (r) this.attachRemote(r);
    });

    // Candidates gathered after the offer was sent are trickled once the answer is in.
    let phase = 'gathering';
    const late = [];
    const sendCandidate = (c) => {
      this.sig.send('candidate', {
        candidate: c ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : null,
      });
    };
    pc.addEventListener('icecandidate', (e) => {
      if (pc !== this.pc || phase === 'gathering') return;
      const c = e.candidate && e.candidate.candidate ? e.candidate : null;
      if (phase === 'sent') late.push(c);
      else sendCandidate(c);
    });

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const complete = await waitForIceGathering(pc, ICE_GATHER_TIMEOUT_MS);
    if (gen !== this.gen || pc !== this.pc) return;
    phase = complete ? 'done' : 'sent';
    const sdp = pc.localDescription.sdp;
    const answer = await this.sig.request('offer', { sdp });
    if (gen !== this.gen || pc !== this.pc) return;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    if (phase === 'sent') {
      phase = 'answered';
      for (const c of late) sendCandidate(c);
    }
    this.root.dataset.state = 'negotiated';
    this.updateConnState();
    if (this.as === 'participant') await this.quality.applyLimits();
    if (gen !== this.gen || pc !== this.pc) return;
    this.quality.start();
  }

  attachRemote(r) {
    const tracks = r.transceivers.map((x) => x.receiver && x.receiver.track).filter(Boolean);
    if (!tracks.length) return;
    const current = r.video.srcObject;
    const same = current && tracks.every((tr) => current.getTracks().includes(tr)) && current.getTracks().length === tracks.length;
    if (!same) r.video.srcObject = new MediaStream(tracks);
    this.play(r.video);
  }

  play(video) {
    const p = video.play();
    if (!p || !p.catch) return;
    p.catch((err) => {
      if (err && err.name === 'NotAllowedError' && !video.muted) {
        // Autoplay with sound blocked (no user gesture yet): play muted, offer a button.
        video.muted = true;
        video.play().catch(() => {});
        this.el.enableAudio.hidden = false;
      }
    });
  }

  enableAudio() {
    for (const r of this.remote) {
      r.video.muted = false;
      r.video.play().catch(() => {});
    }
    this.el.enableAudio.hidden = true;
  }

  scheduleRecovery(why, delay) {
    if (!this.active || this.ended || this.leaving) return;
    clearTimeout(this.recoveryTimer);
    const wait = delay ?? Math.min(15000, 1500 * 2 ** this.recoveryAttempt);
    this.recoveryTimer = setTimeout(() => {
      if (!this.active || this.ended || this.leaving) return;
      const pcBad = !this.pc || ['failed', 'disconnected', 'closed'].includes(this.pc.connectionState);
      if (why !== 'server' && why !== 'join' && !pcBad) return;
      this.recoveryAttempt += 1;
      // aiortc has no ICE restart: come back on a new connection and a new peer.
      if (this.sig.ready) this.sig.reconnectNow();
    }, wait);
  }

  // ---- state ----------------------------------------------------------------------

  connState() {
    if (this.ended) return 'ended';
    const pc = this.pcState;
    if (this.failure && FATAL_JOIN_CODES.has(this.failure)) return 'failed';
    if (this.serverState === 'failed' || pc === 'failed') return 'failed';
    if (pc === 'connected') return 'connected';
    if (!this.sig.ready || pc === 'disconnected' || this.failure) return 'reconnecting';
    return 'connecting';
  }

  updateConnState() {
    const state = this.connState();
    const el = this.el.conn;
    el.dataset.state = state;
    el.dataset.pcState = this.pcState || 'none';
    el.dataset.serverState = this.serverState || 'none';
    setText(el.querySelector('.conn-label'), this.ended && this.ended.reason === 'replaced' ? 'media.moved' : `media.${state}`);
    if (this.ended) {
      this.el.detail.textContent = '';
      return;
    }
    setText(this.el.detail, 'media.detail', {
      browser: { t: `media.pc.${this.pcState || 'none'}` },
      server: { t: `media.server.${this.serverState || 'none'}` },
    });
  }

  // ---- leaving and ending -----------------------------------------------------------

  askEnd(show) {
    this.el.end.hidden = show;
    this.el.endConfirm.hidden = !show;
    this.el.endCancel.hidden = !show;
    if (show) this.el.endConfirm.focus();
  }

  async end() {
    if (!this.active || this.ended) return;
    this.el.endConfirm.disabled = true;
    try {
      await api.endSession(this.sessionId);
      this.handleEnded('ended_by_you');
    } catch (err) {
      showError(err);
      this.askEnd(false);
    } finally {
      this.el.endConfirm.disabled = false;
    }
  }

  async leave() {
    if (!this.active) return;
    if (this.ended) {
      this.exit(this.ended.reason);
      return;
    }
    this.leaving = true;
    this.el.leave.disabled = true;
    this.gen += 1;
    try {
      if (this.sig.ready) await this.sig.request('leave', {}, { timeout: 3000 });
    } catch { /* leaving anyway */ }
    this.el.leave.disabled = false;
    this.exit('left');
  }

  handleEnded(reason) {
    if (this.ended) return;
    this.ended = { reason };
    this.gen += 1;
    clearTimeout(this.recoveryTimer);
    this.closePeer();
    this.stopLocal();
    this.root.dataset.state = 'ended';
    const box = this.el.ended;
    box.dataset.reason = reason;
    const reasonKey = has(`endReason.${reason}`) ? `endReason.${reason}` : 'endReason.other';
    if (reason === 'replaced') setText(box.querySelector('.session-ended-text'), 'session.replaced');
    else setText(box.querySelector('.session-ended-text'), 'session.ended', { reason: { t: reasonKey } });
    box.hidden = false;
    this.setRoster([]);
    this.el.end.hidden = true;
    this.el.endConfirm.hidden = true;
    this.el.endCancel.hidden = true;
    this.recording.ended();
    this.quality.stop();
    this.quality.render();
    setText(this.el.leave, 'session.close');
    this.updateConnState();
    this.updateOverlays();
    this.el.ended.querySelector('#session-back').focus();
  }

  exit(reason) {
    const sessionId = this.sessionId;
    this.gen += 1;
    this.closePeer();
    this.stopLocal();
    this.root.hidden = true;
    this.root.dataset.state = 'closed';
    this.reset();
    this.build();
    this.onExit({ sessionId, reason });
    if (reason === 'left') showNotice('session.leftNotice');
  }

  closePeer() {
    const pc = this.pc;
    this.pc = null;
    this.pcState = null;
    this.serverState = null;
    if (pc) {
      try { pc.close(); } catch { /* ignore */ }
    }
    for (const r of this.remote) {
      r.transceivers = [];
    }
    this.quality.peerClosed();
    this.screen.peerClosed();
  }

  stopLocal() {
    if (this.localStream) {
      for (const tr of this.localStream.getTracks()) tr.stop();
    }
    this.localStream = null;
    if (this.el && this.el.local) this.el.local.srcObject = null;
    this.screen.stop();
  }

  // ---- test hook ------------------------------------------------------------------

  async snapshot() {
    const remote = [];
    for (const r of this.remote) {
      let framesDecoded = null;
      let bytesReceived = null;
      let audioPacketsReceived = null;
      let audioBytesReceived = null;
      const atr = r.transceivers[0];
      if (atr && this.pc) {
        try {
          const report = await atr.receiver.getStats();
          report.forEach((s) => {
            if (s.type === 'inbound-rtp' && (s.kind === 'audio' || s.mediaType === 'audio')) {
              audioPacketsReceived = (audioPacketsReceived || 0) + (s.packetsReceived || 0);
              audioBytesReceived = (audioBytesReceived || 0) + (s.bytesReceived || 0);
            }
          });
        } catch { /* closed */ }
      }
      const vtr = r.transceivers[1];
      if (vtr && this.pc) {
        try {
          const report = await vtr.receiver.getStats();
          report.forEach((s) => {
            if (s.type === 'inbound-rtp' && (s.kind === 'video' || s.mediaType === 'video')) {
              framesDecoded = (framesDecoded || 0) + (s.framesDecoded || 0);
              bytesReceived = (bytesReceived || 0) + (s.bytesReceived || 0);
            }
          });
        } catch { /* closed */ }
      }
      if (framesDecoded === null && r.video.getVideoPlaybackQuality) {
        framesDecoded = r.video.getVideoPlaybackQuality().totalVideoFrames;
      }
      const person = (this.consult && this.consult[r.role]) || r.person || null;
      remote.push({
        label: r.label,
        participant: r.role,
        name: person ? person.name || null : null,
        sub: person ? person.sub || null : null,
        present: this.presentParticipant(r.role),
        videoWidth: r.video.videoWidth,
        videoHeight: r.video.videoHeight,
        framesDecoded,
        bytesReceived,
        audioPacketsReceived,
        audioBytesReceived,
        videoStalled: this.quality.stallOf(r),
        muted: r.video.muted,
        element: `#${r.video.id}`,
      });
    }
    const local = this.el.local && this.localStream ? {
      audio: this.localStream.getAudioTracks().length > 0,
      video: this.localStream.getVideoTracks().length > 0,
      videoWidth: this.el.local.videoWidth,
      videoHeight: this.el.local.videoHeight,
      sent: await this.sentStats(),
    } : null;
    return {
      inSession: this.active,
      sessionId: this.sessionId,
      as: this.as,
      connected: !!this.pc && this.pcState === 'connected',
      connectionState: this.active ? this.connState() : null,
      pcState: this.pcState,
      iceGatheringState: this.pc ? this.pc.iceGatheringState : null,
      mediaState: this.serverState,
      ended: this.ended ? this.ended.reason : null,
      consultId: this.consult ? this.consult.id || null : null,
      roster: this.roster.map((p) => ({ sub: p.sub, name: p.name, role: p.role, as: p.as })),
      observers: this.roster.filter((p) => p.as === 'observer').map((p) => p.sub),
      remote,
      local,
      recording: this.recording.snapshot(),
      ...this.quality.snapshot(),
    };
  }

  /** What this participant's senders have sent so far (outbound-rtp), for the hook. */
  async sentStats() {
    const out = { audioPackets: null, videoFrames: null, frameWidth: null, frameHeight: null, scalabilityMode: null };
    const [ta, tv] = (this.remote[0] && this.remote[0].transceivers) || [];
    if (!this.pc || this.as !== 'participant') return out;
    const read = async (tr, fn) => {
      if (!tr) return;
      try {
        (await tr.sender.getStats()).forEach((s) => { if (s.type === 'outbound-rtp') fn(s); });
      } catch { /* closed */ }
    };
    await read(ta, (s) => { out.audioPackets = (out.audioPackets || 0) + (s.packetsSent || 0); });
    await read(tv, (s) => {
      out.videoFrames = (out.videoFrames || 0) + (s.framesSent || 0);
      if (s.scalabilityMode) out.scalabilityMode = s.scalabilityMode;
      if (s.frameHeight) {
        out.frameWidth = s.frameWidth || null;
        out.frameHeight = s.frameHeight;
      }
    });
    return out;
  }
}
