// The session view shared by the three pages: join over the WebSocket, negotiate media
// exactly as docs/protocol.md says, show video, roster, connection state, leave/end.
// sessionlayout.js builds and renders its elements (the DOM contract is listed there);
// webrtc.js holds the browser WebRTC pieces used here.
//
// State on #session-view, set here: data-session-id, data-as (participant | observer),
// data-state (joining | joined | negotiated | ended | closed); #connection-state's
// data-state (connecting | connected | reconnecting | failed | ended), data-pc-state and
// data-server-state.

import { has, setText, onLangChange } from './i18n.js';
import { api, ApiError } from './api.js';
import { showError, showNotice } from './ui.js';
import { buildViewElements, buildStageTiles, renderConsultInfo, renderRosterList, renderTileOverlays } from './sessionlayout.js';
import { waitForIceGathering, trickleCandidates, addCameraTransceiver, getLocalMedia, receivedTotals, sentTotals } from './webrtc.js';
import { RecordingPanel } from './sessionrecording.js';
import { QualityMonitor } from './quality.js';
import { ScreenShare } from './screenshare.js';
import { Layers } from './layers.js';
import { candidatePair } from './qualitystats.js';

const ICE_GATHER_TIMEOUT_MS = 3000;
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
      if (this.isMine(e.detail)) this.handleEnded(e.detail.reason || 'ended');
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
    if (!this.active || this.ended || !c) return;
    if (c.session_id !== this.sessionId && !(this.consult && c.id === this.consult.id)) return;
    this.consult = { ...(this.consult || {}), ...c };
    if (!['ended', 'cancelled', 'expired'].includes(c.state)) return;
    // session.ended (with its reason) normally follows at once; this is the fallback.
    const sid = this.sessionId;
    setTimeout(() => {
      if (this.active && !this.ended && this.sessionId === sid) this.handleEnded('consult_ended');
    }, 2000);
  }

  /** The language changed: everything with translated text again. */
  rerender() {
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
      this.showJoined(joined);
      await this.negotiate(gen);
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

  async negotiate(gen) {
    if (typeof RTCPeerConnection === 'undefined') throw new ApiError('webrtc_unsupported', '');
    this.closePeer();
    const pc = this.createPeer();
    const current = () => gen === this.gen && pc === this.pc;
    if (this.as === 'observer') this.addObserverTransceivers(pc);
    else if (!(await this.addParticipantMedia(pc, gen))) return;
    // Screen share m-line(s) after the cameras' (docs/protocol.md): always negotiated.
    this.screen.addTransceivers(pc);
    for (const r of this.remote) this.attachRemote(r);
    pc.addEventListener('track', (e) => {
      if (pc !== this.pc) return;
      const r = this.remote.find((x) => x.transceivers.includes(e.transceiver));
      if (r) this.attachRemote(r);
    });
    if (!(await this.exchangeOffer(pc, current))) return;
    this.root.dataset.state = 'negotiated';
    this.updateConnState();
    if (this.as === 'participant') await this.quality.applyLimits();
    if (!current()) return;
    this.quality.start();
    this.layers.negotiated();
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
      if (pc === this.pc) this.onPeerState(pc.connectionState);
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

  /** Camera and microphone out, the other participant in; false once this attempt is over. */
  async addParticipantMedia(pc, gen) {
    if (!this.localStream) {
      this.localStream = await getLocalMedia();
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
    // Low-bandwidth mode: cap the video and put audio first from the first frame on.
    await this.quality.applyLimits();
    if (gen !== this.gen || pc !== this.pc) return false;
    if (this.el.local) {
      this.el.local.srcObject = s;
      this.el.local.muted = true;
      if (s) this.el.local.play().catch(() => {});
    }
    return true;
  }

  /**
   * Offer (sent once ICE gathering completes or times out) and answer; candidates
   * gathered later are trickled once the answer is in. False once this attempt is over.
   */
  async exchangeOffer(pc, current) {
    const trickle = trickleCandidates(pc, () => pc === this.pc, (c) => this.sendCandidate(c));
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const complete = await waitForIceGathering(pc, ICE_GATHER_TIMEOUT_MS);
    if (!current()) return false;
    trickle.offerSent(complete);
    const sdp = pc.localDescription.sdp;
    const answer = await this.sig.request('offer', { sdp });
    if (!current()) return false;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    trickle.answered();
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
