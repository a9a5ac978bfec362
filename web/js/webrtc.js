// Browser WebRTC pieces of the session view (session.js negotiates with them): the
// camera and microphone, the camera's transceiver, waiting for ICE gathering, trickling
// late candidates, and the per-transceiver counters the test hook reports.

import { showError } from './ui.js';
import { SIMULCAST } from './layers.js';

/**
 * Resolves true once ICE gathering is complete; false `graceMs` after the first
 * candidate (the rest are trickled: a browser may take a tenth of a second or more to
 * finish gathering, even on loopback), or after `ms` without any.
 */
export function waitForFirstCandidates(pc, graceMs, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve(true);
  return new Promise((resolve) => {
    let timer = setTimeout(() => done(false), ms);
    const done = (value) => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      pc.removeEventListener('icecandidate', first);
      resolve(value);
    };
    const check = () => { if (pc.iceGatheringState === 'complete') done(true); };
    const first = (e) => {
      if (!e.candidate || !e.candidate.candidate) return;
      pc.removeEventListener('icecandidate', first);
      clearTimeout(timer);
      timer = setTimeout(() => done(pc.iceGatheringState === 'complete'), graceMs);
    };
    pc.addEventListener('icegatheringstatechange', check);
    pc.addEventListener('icecandidate', first);
  });
}

/**
 * Candidates gathered after the offer was sent are held until the answer is in, then
 * sent; later ones go out at once. `isCurrent()`: the peer connection is still the
 * session's. Call offerSent(gatheringComplete) after sending the offer, answered() once
 * the answer is applied.
 */
export function trickleCandidates(pc, isCurrent, send) {
  let phase = 'gathering'; // gathering | sent | answered | done
  const late = [];
  pc.addEventListener('icecandidate', (e) => {
    if (!isCurrent() || phase === 'gathering') return;
    const c = e.candidate && e.candidate.candidate ? e.candidate : null;
    if (phase === 'sent') late.push(c);
    else send(c);
  });
  return {
    offerSent(complete) {
      phase = complete ? 'done' : 'sent';
    },
    answered() {
      if (phase !== 'sent') return;
      phase = 'answered';
      for (const c of late) send(c);
    },
  };
}

// The camera is sent in three simulcast layers (a quarter, half and the full size;
// layers.js), so that each viewer gets the one its own link carries, each in three
// temporal layers (VP8 L1T3): a frame lost on a bad link then costs only the few
// frames that refer to it, and the receiver goes on with the next base-layer frame
// instead of freezing until a repair or a keyframe crosses the link again
// (docs/benchmarks.md, impaired link). A browser that cannot do that sends one layer
// in three temporal layers, or one layer.
export function addCameraTransceiver(pc, track, streams) {
  const init = { direction: 'sendrecv', streams };
  for (const sendEncodings of [SIMULCAST, [{ scalabilityMode: 'L1T3' }]]) {
    try {
      return pc.addTransceiver(track, { ...init, sendEncodings: sendEncodings.map((e) => ({ ...e })) });
    } catch { /* the next */ }
  }
  return pc.addTransceiver(track, init);
}

/**
 * Camera and microphone; with one of them missing, the other alone (and the banner says
 * which is missing); null when neither can be had.
 */
export async function getLocalMedia() {
  const md = navigator.mediaDevices;
  if (!md || !md.getUserMedia) {
    showError({ code: 'media_unsupported' });
    return null;
  }
  // 720p where the camera has it: the largest of the three layers (the viewers' links
  // and tiles choose which one each of them gets).
  const video = { width: { ideal: 1280 }, height: { ideal: 720 } };
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

/**
 * Sums of inbound-rtp `fields` of one kind on a transceiver's receiver, for the hook;
 * each null while nothing was reported (no transceiver, or a closed one).
 */
export async function receivedTotals(transceiver, kind, fields) {
  const out = Object.fromEntries(fields.map((f) => [f, null]));
  if (!transceiver) return out;
  try {
    const report = await transceiver.receiver.getStats();
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && (s.kind === kind || s.mediaType === kind)) {
        for (const f of fields) out[f] = (out[f] || 0) + (s[f] || 0);
      }
    });
  } catch { /* closed */ }
  return out;
}

/** What the audio and camera senders have sent so far (outbound-rtp), for the hook. */
export async function sentTotals(audioTransceiver, videoTransceiver) {
  const out = { audioPackets: null, videoFrames: null, frameWidth: null, frameHeight: null, scalabilityMode: null, layers: null };
  const read = async (tr, fn) => {
    if (!tr) return;
    try {
      (await tr.sender.getStats()).forEach((s) => { if (s.type === 'outbound-rtp') fn(s); });
    } catch { /* closed */ }
  };
  await read(audioTransceiver, (s) => { out.audioPackets = (out.audioPackets || 0) + (s.packetsSent || 0); });
  await read(videoTransceiver, (s) => {
    out.videoFrames = (out.videoFrames || 0) + (s.framesSent || 0);
    if (s.scalabilityMode) out.scalabilityMode = s.scalabilityMode;
    if (s.rid) out.layers = [...(out.layers || []), s.rid];
    if (s.frameHeight && s.frameHeight > (out.frameHeight || 0)) { // the largest layer sent
      out.frameWidth = s.frameWidth || null;
      out.frameHeight = s.frameHeight;
    }
  });
  return out;
}
