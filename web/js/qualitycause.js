// How good the call is and, when it is not, why — on which side and for which cause —
// from one sample of qualitystats.readTraffic (quality.js shows it).
//
// Levels (the badge's colour and bars):
//   poor  loss > 5 % or round trip > 400 ms or a flowing video under 8 fps
//   fair  loss > 1 % or round trip > 150 ms or a flowing video under 15 fps, or this
//         device's encoder reports it is held back by its processor
//   good  otherwise
// Causes (the badge's words), the first that applies:
//   loss          the network loses packets (either way)
//   delay         the network's round trip is long
//   bandwidth     this device's encoder is held back by the bandwidth it may use
//                 (qualityLimitationReason "bandwidth"; the link's estimate is a figure)
//   local_cpu     this device's encoder is held back by its processor
//                 (qualityLimitationReason "cpu"): the network is not at fault
//   local_camera  this device's camera delivers few frames, nothing holding it back
//   local_decoder video arrives whole but this device decodes (or shows) fewer frames
//                 than arrive, or takes longer to decode a frame than the frame lasts
//   remote_sender video arrives slowly with no loss and a short round trip: the other
//                 side's device (its processor or camera) sends few frames
//   none          good
// A level only ever reads "Poor connection" when the cause is the network.

export const POOR_FPS = 8;
export const FAIR_FPS = 15;

function fpsLevel(fps) {
  if (fps === null || fps === undefined) return 'good';
  if (fps < POOR_FPS) return 'poor';
  if (fps < FAIR_FPS) return 'fair';
  return 'good';
}

function networkLevel(lossPct, rttMs) {
  if (lossPct > 5 || rttMs > 400) return 'poor';
  if (lossPct > 1 || rttMs > 150) return 'fair';
  return 'good';
}

const RANK = { good: 0, fair: 1, poor: 2 };
const worst = (...levels) => levels.reduce((a, b) => (RANK[b] > RANK[a] ? b : a), 'good');

/** A remote camera this device is not keeping up with (decoding or showing). */
function decoderBehind(s) {
  if (s.receivedFps && s.receivedFps >= 5 && s.fps < s.receivedFps * 0.8) return true;
  if (s.receivedFps && s.droppedFps > s.receivedFps * 0.2) return true;
  const frameMs = s.receivedFps ? 1000 / s.receivedFps : null;
  return !!(frameMs && s.decodeMs !== null && s.decodeMs > frameMs * 0.9);
}

/**
 * @param {object} o
 * @param {number} o.lossPct      the worse of both directions' loss
 * @param {number|null} o.rttMs
 * @param {object|null} o.sent    our camera as sent ({fps, limitation}), null when not sending
 * @param {object[]} o.incoming   flowing remote cameras ({fps, receivedFps, droppedFps, decodeMs})
 * @returns {{level: string, cause: string}}
 */
export function judge({ lossPct = 0, rttMs = null, sent = null, incoming = [] }) {
  const loss = lossPct || 0;
  const rtt = rttMs ?? 0;
  const net = networkLevel(loss, rtt);
  const sentLevel = sent ? fpsLevel(sent.fps) : 'good';
  const slowest = incoming.reduce((a, b) => (a === null || b.fps < a.fps ? b : a), null);
  const inLevel = slowest ? fpsLevel(slowest.fps) : 'good';
  const cpu = !!(sent && sent.limitation === 'cpu');
  const level = worst(net, sentLevel, inLevel, cpu ? 'fair' : 'good');
  if (level === 'good') return { level, cause: 'none' };
  if (loss > 1) return { level, cause: 'loss' };
  if (rtt > 150) return { level, cause: 'delay' };
  if (cpu) return { level, cause: 'local_cpu' };
  if (RANK[sentLevel] >= RANK[inLevel]) {
    return { level, cause: sent.limitation === 'bandwidth' ? 'bandwidth' : 'local_camera' };
  }
  return { level, cause: decoderBehind(slowest) ? 'local_decoder' : 'remote_sender' };
}

/** The badge's words for a judgement: the level for the network, the cause otherwise. */
export function labelKey({ level, cause }) {
  if (level === 'good' || cause === 'none') return 'quality.level.good';
  if (cause === 'loss' || cause === 'delay' || cause === 'bandwidth') return `quality.cause.${cause}_${level}`;
  return `quality.cause.${cause}`;
}
