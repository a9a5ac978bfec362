// Where the time goes between an accept and the first picture (bench/first_picture.py
// reads it through the hook): named marks, each the first time it happens since
// startTimeline(), in milliseconds since the epoch (performance.timeOrigin + now, so
// two pages on one machine compare), also left as performance marks ("jisr:NAME").
//
// Marks: accept.click, accept.answered (specialist), accepted.push (referrer),
// join.sent, join.answered, media.asked, media.ready, offer.created, ice.gathered (the
// first candidates: the offer goes with them, the rest trickle),
// offer.sent, answer.applied, ice.connected, dtls.connected, frame.first.

let marks = {};

export function startTimeline(first) {
  marks = {};
  if (first) mark(first);
}

export function mark(name) {
  if (marks[name] !== undefined) return;
  marks[name] = performance.timeOrigin + performance.now();
  try { performance.mark(`jisr:${name}`); } catch { /* old browsers */ }
}

export function timelineSnapshot() {
  return { ...marks };
}
