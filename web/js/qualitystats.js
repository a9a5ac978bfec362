// Reading RTCPeerConnection.getStats() for the connection quality (quality.js judges and
// shows it): what moved on the peer connection between two reports taken a sample apart.
// Round-trip time from the selected candidate pair (else RTCP), packet loss from inbound
// packetsLost/packetsReceived deltas and from what the server reports about ours
// (remote-inbound-rtp), bytes sent and received, the flowing cameras' resolution and
// frame rate, the decoder's work on each (frames received, decoded, dropped, decode
// time), and the encoder's qualityLimitationReason.

const FLOWING_BYTES = 10000; // video bytes in one sample without a frame: a broken stream

/** The selected candidate pair: the transport's, else a nominated pair that succeeded. */
function selectedPair(byId) {
  let pair = null;
  for (const s of byId.values()) {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId) || pair;
  }
  if (pair) return pair;
  for (const s of byId.values()) {
    if (s.type === 'candidate-pair' && s.state === 'succeeded' && (s.nominated || s.selected)) pair = s;
  }
  return pair;
}

/**
 * The mids of the camera m-lines (the second transceiver of each remote tile). A shared
 * screen (a later video m-line) runs at a few frames per second by design and must not
 * read as a bad link.
 */
export function cameraMids(remote) {
  return new Set(remote.map((r) => r.transceivers && r.transceivers[1] && r.transceivers[1].mid).filter(Boolean));
}

function noTraffic() {
  return {
    lost: 0,
    received: 0,
    recvBytes: 0,
    sendBytes: 0,
    recvHeight: null,
    recvWidth: null,
    flowingFps: [], // flowing cameras, received
    recvFpsAll: [],
    incoming: [], // flowing cameras: {fps (decoded), receivedFps, droppedFps, decodeMs}
    sent: null, // our camera: {height, width, fps, limitation, active}
    upstreamLoss: null,
    rtcpRtt: null,
    streams: new Map(), // remote video by mid: {frames, fps, packets}; audio by `audio:<mid>`: {packets}
  };
}

function addInbound(tr, s, delta, dt, isCamera) {
  const kind = s.kind || s.mediaType;
  const packets = delta(s, 'packetsReceived');
  tr.lost += delta(s, 'packetsLost');
  tr.received += packets;
  tr.recvBytes += delta(s, 'bytesReceived');
  if (kind === 'audio') {
    tr.streams.set(`audio:${s.mid ?? s.id}`, { packets });
    return;
  }
  if (kind !== 'video') return;
  const frames = delta(s, 'framesDecoded');
  const fps = frames / dt;
  tr.streams.set(s.mid ?? s.trackIdentifier ?? s.id, { frames: s.framesDecoded || 0, fps, packets });
  // Flowing: frames decoded, or real amounts of video arriving without any frame
  // (a broken link). A remote in audio-only mode sends none: not counted.
  if (!isCamera(s) || !(frames > 0 || delta(s, 'bytesReceived') > FLOWING_BYTES)) return;
  tr.flowingFps.push(fps);
  tr.recvFpsAll.push(fps);
  const decodeS = delta(s, 'totalDecodeTime');
  tr.incoming.push({
    fps,
    receivedFps: Number.isFinite(s.framesReceived) ? delta(s, 'framesReceived') / dt : null,
    droppedFps: delta(s, 'framesDropped') / dt,
    decodeMs: frames > 0 && Number.isFinite(s.totalDecodeTime) ? (decodeS * 1000) / frames : null,
  });
  if (s.frameHeight && (tr.recvHeight === null || s.frameHeight > tr.recvHeight)) {
    tr.recvHeight = s.frameHeight;
    tr.recvWidth = s.frameWidth || null;
  }
}

function addOutbound(tr, s, delta, dt, isCamera) {
  const kind = s.kind || s.mediaType;
  tr.sendBytes += delta(s, 'bytesSent');
  if (kind !== 'video' || !isCamera(s)) return;
  tr.sent = {
    height: s.frameHeight || null,
    width: s.frameWidth || null,
    fps: delta(s, 'framesEncoded') / dt,
    limitation: s.qualityLimitationReason || null,
    active: s.active !== false,
  };
}

function addRemoteInbound(tr, s) {
  if (Number.isFinite(s.fractionLost)) tr.upstreamLoss = Math.max(tr.upstreamLoss || 0, s.fractionLost * 100);
  if (Number.isFinite(s.roundTripTime) && s.roundTripTime > 0) tr.rtcpRtt = Math.max(tr.rtcpRtt || 0, s.roundTripTime * 1000);
}

/**
 * What moved between two reports (each a Map id -> stats) taken dt seconds apart:
 * {rttMs, availableKbps, lost, received, recvBytes, sendBytes, recvHeight, recvWidth,
 *  flowingFps, recvFpsAll, incoming, sent, upstreamLoss, streams}. `cameras`: cameraMids().
 */
export function readTraffic(byId, prevById, dt, cameras) {
  const delta = (s, key) => {
    const b = prevById.get(s.id) || null;
    const d = (s[key] || 0) - ((b && b[key]) || 0);
    return d > 0 ? d : 0;
  };
  const isCamera = (s) => s.mid === undefined || !cameras.size || cameras.has(s.mid);
  const tr = noTraffic();
  for (const s of byId.values()) {
    if (s.type === 'inbound-rtp') addInbound(tr, s, delta, dt, isCamera);
    else if (s.type === 'outbound-rtp') addOutbound(tr, s, delta, dt, isCamera);
    else if (s.type === 'remote-inbound-rtp') addRemoteInbound(tr, s);
  }
  const pair = selectedPair(byId);
  tr.rttMs = pair && Number.isFinite(pair.currentRoundTripTime) ? pair.currentRoundTripTime * 1000 : tr.rtcpRtt;
  tr.availableKbps = pair && Number.isFinite(pair.availableOutgoingBitrate) ? pair.availableOutgoingBitrate / 1000 : null;
  return tr;
}

function candidateEnd(c) {
  return {
    type: c ? c.candidateType || null : null,
    protocol: c ? c.protocol || null : null,
    relayProtocol: c ? c.relayProtocol || null : null,
    address: c ? c.address || c.ip || null : null,
    port: c && Number.isFinite(c.port) ? c.port : null,
  };
}

/** The selected candidate pair of a peer connection, for the test hook, or null. */
export async function candidatePair(pc) {
  if (!pc) return null;
  const byId = new Map();
  (await pc.getStats()).forEach((s) => byId.set(s.id, s));
  const pair = selectedPair(byId);
  if (!pair) return null;
  return {
    state: pair.state,
    local: candidateEnd(byId.get(pair.localCandidateId)),
    remote: candidateEnd(byId.get(pair.remoteCandidateId)),
  };
}
