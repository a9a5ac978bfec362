// Read-only hook for automated browser tests: window.jisr.
//
//   await window.jisr.state() -> {
//     page: 'referrer'|'specialist'|'supervisor'|'index', lang: 'en'|'ar',
//     ready: bool (signed in and page initialised), signedIn: bool,
//     user: {sub, name, role, facility, specialties} | null, role,
//     signaling: 'idle'|'connecting'|'authenticating'|'ready'|'reconnecting'|'auth_failed'|'closed',
//     connected: bool            (the session's RTCPeerConnection is 'connected'),
//     connectionState: 'connecting'|'connected'|'reconnecting'|'failed'|'ended'|null,
//     pcState, mediaState (last server media.state), iceGatheringState,
//     candidatePair: {state, local: {type, protocol, relayProtocol, address, port},
//                     remote: {…}} | null  (the selected pair, from getStats()),
//     inSession: bool, sessionId, as: 'participant'|'observer'|null, ended: reason|null,
//     endedBy: {sub, part}|null, endedReport: 'arrived'|'may_follow'|'write_now'|'none'|null,
//     timeline: {mark: epoch ms} (timeline.js: accept click to first frame),
//     remote: [{label: 'remote'|'referrer'|'specialist', participant: 'referrer'|'specialist',
//               name, sub, present, videoWidth, videoHeight, framesDecoded, bytesReceived,
//               audioPacketsReceived, audioBytesReceived,
//               videoStalled: null|'videoPaused'|'mediaStalled', muted, element}],
//     local: {audio, video, videoWidth, videoHeight,
//             sent: {audioPackets, videoFrames, frameWidth, frameHeight, scalabilityMode,
//                    layers: the RIDs of the simulcast layers sent, or null}} | null,
//     quality: {level: 'good'|'fair'|'poor'|null, cause ('none'|'loss'|'delay'|'bandwidth'|
//               'local_cpu'|'local_camera'|'local_decoder'|'remote_sender', qualitycause.js),
//               label (the badge's i18n key), detailOpen, rttMs, lossPct, sendKbps, recvKbps,
//               sentHeight, recvHeight, recvFps,
//               (also: raw (this sample's level), downLossPct, upLossPct, availableKbps,
//                sentWidth, sentFps, limitation (qualityLimitationReason), recvWidth, at)}
//               measured every 2 s from getStats(); level null until the first measurement,
//     limits: {maxVideoBitrate, maxVideoHeight, applied: bool (the video sender carries them),
//              scaleResolutionDownBy, degradationPreference},
//     audioOnly: bool (this participant stopped sending video), qualityNotice: bool,
//     roster: [{sub, name, role, as}], observers: [sub],
//     screen: {sharing: bool, remote: [{participant, framesDecoded, width, height, shown,
//              element}]}  (screenshare.js; shown: frames arriving on that screen m-line)
//     recording: {state: 'idle'|'requested'|'recording'|'paused'|'stopped', recordingId,
//                 requestedBy (sub), consents: [{sub, name, consent: true|false|null}],
//                 myConsent, indicator: bool (#recording-indicator shown),
//                 prompt: bool (#recording-consent shown), pending},
//     consults: [{id, state, urgency, specialty, session_id}]   (referrer, specialist)
//     sessions: [{id, state, consult_id}]                      (supervisor)
//     recordings: [id, ...] (newest first; every page with a recordings list),
//     recordingList: [{id, state, session_id, consult_id, duration_s}], recordingsStatus:
//                 'idle'|'loading'|'ok'|'unavailable'|'error',
//     player: {src: bool (a blob: URL is set), recordingId, loading, readyState, currentTime,
//              duration, videoWidth, videoHeight, paused, ended, error: {code, message}|null
//              (these of the leading video, the one with the controls),
//              tiles: [{participant: 'referrer'|'specialist'|null (whole recording), leader,
//                       src, readyState, currentTime, start (where its media begins on the
//                       shared timeline), duration, videoWidth, videoHeight, paused, ended,
//                       muted, label}]},
//     Triage, case packet, chat, report (triage.js, presence.js, casepacket.js,
//     attachmentviewer.js, chat.js, report.js, sessionpanels.js, referrercase.js,
//     dashboard.js; fields listed in each):
//     presence: {choice, effective, shown: 'available'|'busy'|'off'|'in_session'|'pending',
//               pressed: [choices shown pressed], inSession, confirmedAt, sent}                           (specialist)
//     queue: [{id, state, urgency, specialty, reannounced, escalated, offeredToMe, declines,
//              transfers, attachments, shownAt (ms epoch first rendered)}], queueIds (specialist)
//     attachments: [{id, consult_id, filename, content_type, size}], uploads {consultId: {state,
//              code, filename, pct, results}}, viewer {open, kind, state, naturalWidth, embedded, …}
//     chat: {sessionId, messages: [{from, name, role, as, text, at, mine}], sending, error, ended}
//     reportForm: {consultId, state, error, sha256}                       (specialist)
//     report: {consultId, findings, assessment, recommendation, follow_up_urgency, sha256,
//              shown, …} | null, reports, positions, reportDownloads      (referrer)
//     escalations: [{id, urgency, specialty, escalated_at, offered_to, inList}],
//     escalationAlert: {shown, count, consultIds}, dashboard: {state, queue, live, onCall,
//              meanAccept}                                                 (supervisor)
//     outage: {shown (#outage-notice says the state store is unavailable), since, clearedAt
//              (ms epoch it was noticed, and the last one was over), checks (GET /readyz
//              asked during it), call: 'participant'|'observer'|null,
//              text (what the notice says)}                          (outage.js)
//     lastError: {code, message, context, at} | null,
//   }
// Nothing here changes state.

import { getLang } from './i18n.js';
import { getLastError } from './ui.js';
import { getToken } from './auth.js';

const sources = new Map();
const base = { page: document.body ? document.body.dataset.page || null : null, ready: false };

export function setHookBase(fields) {
  Object.assign(base, fields);
}

export function registerHookSource(name, fn) {
  sources.set(name, fn);
}

async function state() {
  const out = {
    page: base.page,
    lang: getLang(),
    ready: !!base.ready,
    signedIn: !!getToken() && !!base.user,
    user: base.user || null,
    role: base.user ? base.user.role : null,
    signaling: base.signaling ? base.signaling.state : 'idle',
    connected: false,
    connectionState: null,
    inSession: false,
    sessionId: null,
    as: null,
    ended: null,
    remote: [],
    local: null,
    roster: [],
    observers: [],
    recording: { state: 'idle', recordingId: null, consents: [], indicator: false },
    quality: { level: null, rttMs: null, lossPct: null, sendKbps: null, recvKbps: null, sentHeight: null, recvHeight: null, recvFps: null },
    limits: { maxVideoBitrate: null, maxVideoHeight: null, applied: false },
    audioOnly: false,
    qualityNotice: false,
  };
  for (const fn of sources.values()) {
    try {
      Object.assign(out, await fn());
    } catch (e) {
      out.hookError = String(e && e.message ? e.message : e);
    }
  }
  out.lastError = getLastError();
  return JSON.parse(JSON.stringify(out));
}

Object.defineProperty(window, 'jisr', {
  value: Object.freeze({ version: 1, state }),
  writable: false,
  configurable: false,
});
