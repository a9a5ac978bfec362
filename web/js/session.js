// The session view shared by the three pages: join over the WebSocket, negotiate media
// exactly as docs/protocol.md says, show video, roster, connection state, leave/end.
// sessionlayout.js builds and renders its elements (the DOM contract is listed there);
// webrtc.js holds the browser WebRTC pieces used here.
//
// State on #session-view, set here: data-session-id, data-as (participant | observer),
// data-state (joining | joined | negotiated | ended | closed); #connection-state's
// data-state (connecting | connected | reconnecting | failed | ended), data-pc-state and
// data-server-state.

import { setText, onLangChange } from './i18n.js';
import { api, ApiError } from './api.js';
import { showError, showNotice } from './ui.js';
import { buildViewElements, buildStageTiles, renderConsultInfo, renderRosterList, renderTileOverlays, fitStage, fitTargets } from './sessionlayout.js';
import { renderEnded } from './sessionended.js';
import { waitForFirstCandidates, trickleCandidates, addCameraTransceiver, getLocalMedia, receivedTotals, sentTotals } from './webrtc.js';
import { RecordingPanel } from './sessionrecording.js';
import { QualityMonitor } from './quality.js';
import { ScreenShare } from './screenshare.js';
import { Layers } from './layers.js';
import { candidatePair } from './qualitystats.js';
import { mark } from './timeline.js';

const ICE_GATHER_TIMEOUT_MS = 3000;
// The offer goes out this long after the first candidate (or at once when gathering is
// complete); candidates found later are trickled.
const ICE_FIRST_GRACE_MS = 20;
const FATAL_JOIN_CODES = new Set([
  'session_not_found', 'consult_not_found', 'invalid_state', 'forbidden', 'too_many_observers',
  'bad_sdp', 'observer_cannot_send', 'token_expired', 'token_invalid', 'webrtc_unsupported',
]);

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
    this.layers = new Layers(this);
    this.reset();
    this.build();
    this.listenToSignaling();
    onLangChange(() => {
      if (this.active) this.rerender();
    });
    this.followWindow();
  }

  /** Keep the picture sized to the window (resize, rotation, full screen, a bar that wraps). */
  followWindow() {
    const fit = () => { if (this.active) fitStage(this); };
    window.addEventListener('resize', fit);
    document.addEventListener('fullscreenchange', () => {
      const on = !!document.fullscreenElement;
      if (this.el.fullscreen) {
        this.el.fullscreen.setAttribute('aria-pressed', String(on));
        setText(this.el.fullscreen, on ? 'session.fullscreenExit' : 'session.fullscreen');
      }
      fit();
    });
    this.barObserver = typeof ResizeObserver === 'undefined' ? null : new ResizeObserver(fit);
  }

  /** A push about this session (not one ended or left). */
  isMine(detail) {
    return this.active && detail.session_id === this.sessionId;
  }

  listenToSignaling() {
    const sig = this.sig;
    sig.addEventListener('roster', (e) => {
      if (this.isMine(e.detail)) this.setRoster(e.detail.roster);
    });
    sig.addEventListener('session.ended', (e) => {
      if (this.isMine(e.detail)) this.handleEnded(e.detail.reason || 'ended', e.detail);
    });
    sig.addEventListener('session.replaced', (e) => {
      // The same participant joined from another window or device: media moved there.
      // Do not rejoin from here (the two would keep replacing each other).
      if (this.isMine(e.detail)) this.handleEnded('replaced');
    });
    sig.addEventListener('recording.state', (e) => {
      if (this.isMine(e.detail) && !this.ended) this.recording.set(e.detail);
    });
    sig.addEventListener('media.state', (e) => this.onMediaState(e.detail));
    sig.addEventListener('consult.updated', (e) => this.onConsultUpdated(e.detail.consult));
    sig.addEventListener('ready', (e) => {
      // A new signaling connection has no joined session: join again on a new peer.
      // (Also the first connection, when join() was called before it was up.)
      if (this.active && !this.ended && !this.leaving && (e.detail.reconnected || this.needsJoin)) this.rejoin();
    });
    sig.addEventListener('state', () => {
      if (this.active && !this.ended) this.updateConnState();
    });
  }

  onMediaState(detail) {
    if (!this.active || this.ended) return;
    if (detail.session_id && detail.session_id !== this.sessionId) return;
    this.serverState = detail.state || null;
    this.updateConnState();
    if (this.serverState === 'failed') this.scheduleRecovery('server');
  }

  onConsultUpdated(c) {
    if (!this.active || !c) return;
    if (c.session_id !== this.sessionId && !(this.consult && c.id === this.consult.id)) return;
    this.consult = { ...(this.consult || {}), ...c };
    // The ended view follows its consult: a report sent after the end shows there.
    if (this.ended) {
      renderEnded(this);
      return;
    }
    if (!['ended', 'cancelled', 'expired'].includes(c.state)) return;
    // session.ended (with its reason) normally follows at once; this is the fallback.
    const sid = this.sessionId;
    setTimeout(() => {
      if (this.active && !this.ended && this.sessionId === sid) this.handleEnded('consult_ended');
    }, 2000);
  }

  /** The language changed: everything with translated text again. */
  rerender() {
    if (this.ended) renderEnded(this);
    this.renderRoster();
    this.updateConnState();
    this.recording.render();
    this.quality.render();
    this.updateOverlays();
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

  // ---- DOM (sessionlayout.js) --------------------------------------------------------

  build() {
    // Emptied first: the panels built on the way render against it.
    this.el = {};
    Object.assign(this.el, buildViewElements(this));
    this.screen.build();
    if (this.barObserver) {
      this.barObserver.disconnect();
      for (const el of fitTargets(this)) this.barObserver.observe(el);
    }
  }

  buildStage() {
    this.remote = [];
    const { remote, local, localOff } = buildStageTiles(this);
    this.remote = remote;
    this.el.local = local;
    this.el.localOff = localOff;
    this.screen.buildStage();
    this.layers.watch(this.remote);
    this.quality.render();
    this.renderInfo();
    fitStage(this);
  }

  myPart() {
    if (this.part) return this.part;
    const c = this.consult || {};
    if (c.referrer && c.referrer.sub === this.me.sub) return 'referrer';
    if (c.specialist && c.specialist.sub === this.me.sub) return 'specialist';
    return this.me.role === 'specialist' ? 'specialist' : 'referrer';
  }

  renderInfo() {
    renderConsultInfo(this.el, this.consult);
  }

  // ---- roster ---------------------------------------------------------------------

  setRoster(roster) {
    this.roster = Array.isArray(roster) ? roster : [];
    this.renderRoster();
    this.updateOverlays();
  }

  renderRoster() {
    renderRosterList(this);
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
    renderTileOverlays(this);
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
    // The call opens at the top of the page, wherever it was scrolled to before (the
    // referrer's form, a long queue): the picture is first, sized to the window.
    window.scrollTo(0, 0);
    fitStage(this);
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
      // A participant's camera, peer connection and offer are made while the join is
      // in flight; the offer goes out once the join is answered.
      const early = this.startEarly(gen);
      mark('join.sent');
      const joined = await this.sig.request('join', { session_id: this.sessionId });
      mark('join.answered');
      if (gen !== this.gen || !this.active) return;
      this.showJoined(joined);
      await this.negotiate(gen, this.as === 'participant' ? early : null);
      this.recoveryAttempt = 0;
      this.notHereAttempts = 0;
    } catch (err) {
      if (gen !== this.gen || !this.active || this.ended) return;
      this.onAttemptError(err);
    }
  }

  /** The server's `joined`: how this page is in the session, who is there, recording. */
  showJoined(joined) {
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

  /**
   * Pages that publish (referrer, specialist) start their peer before the join is
   * answered: returns the promise of startPeer(), or null (observers).
   */
  startEarly(gen) {
    if (!['referrer', 'specialist'].includes(this.me.role) || typeof RTCPeerConnection === 'undefined') return null;
    this.as = 'participant';
    if (!this.remote.length || this.el.stage.dataset.as !== 'participant') this.buildStage();
    const early = this.startPeer(gen);
    early.catch(() => {}); // the join's own failure is the one reported
    return early;
  }

  /** Offer and answer on the peer from startPeer() (made now unless `early` was). */
  async negotiate(gen, early = null) {
    const started = early ? await early : null;
    if (gen !== this.gen || !this.active) return;
    const pc = started && started === this.pc ? started : await this.startPeer(gen);
    if (!pc) return;
    const current = () => gen === this.gen && pc === this.pc;
    // Low-bandwidth mode: the caps (known from the join) before the first frame is sent.
    if (this.as === 'participant') await this.quality.applyLimits();
    if (!current() || !(await this.sendOffer(pc, current))) return;
    this.root.dataset.state = 'negotiated';
    this.updateConnState();
    if (this.as === 'participant') await this.quality.applyLimits();
    if (!current()) return;
    this.quality.start();
    this.layers.negotiated();
  }

  /**
   * A new peer connection, made the session's, with its transceivers (camera and
   * microphone out for participants), its local offer set and its candidates gathered;
   * null once this attempt is over.
   */
  async startPeer(gen) {
    if (typeof RTCPeerConnection === 'undefined') throw new ApiError('webrtc_unsupported', '');
    this.closePeer();
    const pc = this.createPeer();
    if (this.as === 'observer') this.addObserverTransceivers(pc);
    else if (!(await this.addParticipantMedia(pc, gen))) return null;
    // Screen share m-line(s) after the cameras' (docs/protocol.md): always negotiated.
    this.screen.addTransceivers(pc);
    for (const r of this.remote) this.attachRemote(r);
    pc.addEventListener('track', (e) => {
      if (pc !== this.pc) return;
      const r = this.remote.find((x) => x.transceivers.includes(e.transceiver));
      if (r) this.attachRemote(r);
    });
    await this.prepareOffer(pc);
    return gen === this.gen && pc === this.pc ? pc : null;
  }

  /** A new peer connection, made the session's, with its state followed. */
  createPeer() {
    const pc = new RTCPeerConnection({
      iceServers: Array.isArray(this.config.ice_servers) ? this.config.ice_servers : [],
      iceTransportPolicy: this.config.ice_transport_policy === 'relay' ? 'relay' : 'all',
    });
    this.pc = pc;
    this.pcState = pc.connectionState || 'new';
    pc.addEventListener('connectionstatechange', () => {
      if (pc !== this.pc) return;
      if (pc.connectionState === 'connected') mark('dtls.connected');
      this.onPeerState(pc.connectionState);
    });
    pc.addEventListener('iceconnectionstatechange', () => {
      if (pc === this.pc && ['connected', 'completed'].includes(pc.iceConnectionState)) mark('ice.connected');
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
    return pc;
  }

  onPeerState(state) {
    this.pcState = state;
    this.updateConnState();
    if (state === 'failed') this.scheduleRecovery('pc');
    else if (state === 'disconnected') this.scheduleRecovery('pc', 8000);
    else if (state === 'connected') {
      clearTimeout(this.recoveryTimer);
      this.recoveryAttempt = 0;
      this.quality.sample().catch(() => {}); // the baseline: a level 2 s later
    }
  }

  /** Observers receive both participants: audio and video of each, in that order. */
  addObserverTransceivers(pc) {
    const tr = ['audio', 'video', 'audio', 'video'].map((kind) => pc.addTransceiver(kind, { direction: 'recvonly' }));
    this.remote[0].transceivers = [tr[0], tr[1]];
    this.remote[1].transceivers = [tr[2], tr[3]];
  }

  /**
   * The camera and microphone asked for ahead of the join (the specialist's accept
   * click): addParticipantMedia() takes them. unprepare() lets them go (accept refused).
   */
  prepare() {
    if (this.localStream || this.preparing || this.active) return;
    mark('media.asked');
    this.preparing = getLocalMedia();
  }

  unprepare() {
    const pending = this.preparing;
    this.preparing = null;
    if (pending && !this.active) {
      pending.then((s) => { if (s) for (const tr of s.getTracks()) tr.stop(); }).catch(() => {});
    }
  }

  /** Camera and microphone out, the other participant in; false once this attempt is over. */
  async addParticipantMedia(pc, gen) {
    if (!this.localStream) {
      mark('media.asked');
      const asked = this.preparing || getLocalMedia();
      this.preparing = null;
      this.localStream = await asked;
      mark('media.ready');
      if (gen !== this.gen || !this.active) {
        this.stopLocal();
        return false;
      }
    }
    const s = this.localStream;
    const streams = s ? [s] : [];
    const audio = s && s.getAudioTracks()[0];
    const video = s && s.getVideoTracks()[0];
    const ta = pc.addTransceiver(audio || 'audio', { direction: 'sendrecv', streams });
    const tv = addCameraTransceiver(pc, video || 'video', streams);
    this.remote[0].transceivers = [ta, tv];
    // Low-bandwidth mode: cap the video and put audio first from the first frame on
    // (again once the join gave the caps, before the offer goes out).
    await this.quality.applyLimits();
    if (gen !== this.gen || pc !== this.pc) return false;
    if (this.el.local) {
      this.el.local.srcObject = s;
      this.el.local.muted = true;
      if (s) this.el.local.play().catch(() => {});
    }
    return true;
  }

  /** The local offer, with its first candidates (the rest trickle, see sendOffer). */
  async prepareOffer(pc) {
    pc.trickle = trickleCandidates(pc, () => pc === this.pc, (c) => this.sendCandidate(c));
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    mark('offer.created');
    pc.gathered = await waitForFirstCandidates(pc, ICE_FIRST_GRACE_MS, ICE_GATHER_TIMEOUT_MS);
    mark('ice.gathered');
  }

  /**
   * The offer out (candidates gathered later are trickled once the answer is in) and
   * the answer applied. False once this attempt is over.
   */
  async sendOffer(pc, current) {
    pc.trickle.offerSent(pc.gathered);
    // The offer as it stands now (the caps set since do not change the SDP).
    const sdp = pc.localDescription.sdp;
    mark('offer.sent');
    const answer = await this.sig.request('offer', { sdp });
    if (!current()) return false;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    mark('answer.applied');
    pc.trickle.answered();
    return true;
  }

  sendCandidate(c) {
    this.sig.send('candidate', {
      candidate: c ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : null,
    });
  }

  attachRemote(r) {
    const tracks = r.transceivers.map((x) => x.receiver && x.receiver.track).filter(Boolean);
    if (!tracks.length) return;
    const current = r.video.srcObject;
    const same = current && tracks.every((tr) => current.getTracks().includes(tr)) && current.getTracks().length === tracks.length;
    if (!same) {
      r.video.srcObject = new MediaStream(tracks);
      if (r.video.requestVideoFrameCallback) r.video.requestVideoFrameCallback(() => mark('frame.first'));
    }
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

  handleEnded(reason, detail = null) {
    if (this.ended) return;
    const by = detail && detail.by ? detail.by : reason === 'ended_by_you' ? { sub: this.me.sub, name: this.me.name } : null;
    this.ended = { reason, by, part: detail ? detail.part || null : this.part };
    this.gen += 1;
    clearTimeout(this.recoveryTimer);
    this.closePeer();
    this.stopLocal();
    this.root.dataset.state = 'ended';
    renderEnded(this);
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    this.setRoster([]);
    this.el.end.hidden = true;
    this.el.endConfirm.hidden = true;
    this.el.endCancel.hidden = true;
    this.el.fullscreen.hidden = true;
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
    this.unprepare(); // a camera asked for ahead of a join that never used it
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
    this.layers.peerClosed();
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
    for (const r of this.remote) remote.push(await this.remoteSnapshot(r));
    const local = this.el.local && this.localStream ? await this.localSnapshot() : null;
    return {
      inSession: this.active,
      sessionId: this.sessionId,
      as: this.as,
      connected: !!this.pc && this.pcState === 'connected',
      connectionState: this.active ? this.connState() : null,
      pcState: this.pcState,
      iceGatheringState: this.pc ? this.pc.iceGatheringState : null,
      candidatePair: await candidatePair(this.pc),
      mediaState: this.serverState,
      ended: this.ended ? this.ended.reason : null,
      endedBy: this.ended && this.ended.by ? { sub: this.ended.by.sub, part: this.ended.part } : null,
      endedReport: this.ended ? this.el.ended.dataset.report || null : null,
      consultId: this.consult ? this.consult.id || null : null,
      roster: this.roster.map((p) => ({ sub: p.sub, name: p.name, role: p.role, as: p.as })),
      observers: this.roster.filter((p) => p.as === 'observer').map((p) => p.sub),
      remote,
      local,
      recording: this.recording.snapshot(),
      ...this.quality.snapshot(),
    };
  }

  async remoteSnapshot(r) {
    const audio = await receivedTotals(this.pc ? r.transceivers[0] : null, 'audio', ['packetsReceived', 'bytesReceived']);
    const video = await receivedTotals(this.pc ? r.transceivers[1] : null, 'video', ['framesDecoded', 'bytesReceived']);
    let framesDecoded = video.framesDecoded;
    if (framesDecoded === null && r.video.getVideoPlaybackQuality) {
      framesDecoded = r.video.getVideoPlaybackQuality().totalVideoFrames;
    }
    const person = (this.consult && this.consult[r.role]) || r.person || null;
    return {
      label: r.label,
      participant: r.role,
      name: person ? person.name || null : null,
      sub: person ? person.sub || null : null,
      present: this.presentParticipant(r.role),
      videoWidth: r.video.videoWidth,
      videoHeight: r.video.videoHeight,
      framesDecoded,
      bytesReceived: video.bytesReceived,
      audioPacketsReceived: audio.packetsReceived,
      audioBytesReceived: audio.bytesReceived,
      videoStalled: this.quality.stallOf(r),
      muted: r.video.muted,
      element: `#${r.video.id}`,
    };
  }

  async localSnapshot() {
    return {
      audio: this.localStream.getAudioTracks().length > 0,
      video: this.localStream.getVideoTracks().length > 0,
      videoWidth: this.el.local.videoWidth,
      videoHeight: this.el.local.videoHeight,
      sent: await this.sentStats(),
    };
  }

  /** What this participant's senders have sent so far (outbound-rtp), for the hook. */
  sentStats() {
    const [ta, tv] = (this.remote[0] && this.remote[0].transceivers) || [];
    if (!this.pc || this.as !== 'participant') return sentTotals(null, null);
    return sentTotals(ta, tv);
  }
}
