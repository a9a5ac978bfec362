// A short alert sound (WebAudio, no sound files) for what must not be missed: a new
// critical consult, a re-announced consult, an escalation. The user can turn it off
// (a checkbox built by soundToggle(); the choice is kept in localStorage). Browsers only
// let a page make sound after the user has interacted with it: the audio context is
// resumed on the first click or key press; until then alerts are silent (the visual
// highlight is always there).
//
// Elements: input#alert-sound[type=checkbox] inside label.sound-toggle (soundToggle()).

import { h } from './ui.js';

const KEY = 'jisr.alertSound';
let audio = null;
let played = 0; // how many alerts were played (test hook)
let lastKind = null;

function enabled() {
  try {
    return localStorage.getItem(KEY) !== 'off';
  } catch {
    return true;
  }
}

function setEnabled(on) {
  try { localStorage.setItem(KEY, on ? 'on' : 'off'); } catch { /* storage disabled */ }
}

function context() {
  if (audio) return audio;
  const AC = window.AudioContext || window.webkitAudioContext;
  if (!AC) return null;
  try {
    audio = new AC();
  } catch {
    audio = null;
  }
  return audio;
}

function unlock() {
  const a = context();
  if (a && a.state === 'suspended') a.resume().catch(() => {});
}
document.addEventListener('pointerdown', unlock, { capture: true, passive: true });
document.addEventListener('keydown', unlock, { capture: true, passive: true });

// [frequency Hz, start s, length s]
const PATTERNS = {
  critical: [[880, 0, 0.14], [660, 0.18, 0.14], [880, 0.36, 0.14], [660, 0.54, 0.14]],
  escalation: [[988, 0, 0.16], [740, 0.2, 0.16], [988, 0.4, 0.16], [740, 0.6, 0.16], [988, 0.8, 0.24]],
  reannounce: [[660, 0, 0.16], [880, 0.22, 0.2]],
};

/** Play a short alert of `kind` ('critical' | 'escalation' | 'reannounce') unless muted. */
export function playAlert(kind = 'critical') {
  lastKind = kind;
  if (!enabled()) return false;
  const a = context();
  if (!a) return false;
  if (a.state === 'suspended') a.resume().catch(() => {});
  const now = a.currentTime + 0.02;
  for (const [freq, start, len] of PATTERNS[kind] || PATTERNS.critical) {
    const osc = a.createOscillator();
    const gain = a.createGain();
    osc.type = 'sine';
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, now + start);
    gain.gain.exponentialRampToValueAtTime(0.25, now + start + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, now + start + len);
    osc.connect(gain).connect(a.destination);
    osc.start(now + start);
    osc.stop(now + start + len + 0.02);
  }
  played += 1;
  return true;
}

/** A labelled checkbox that turns the alert sound on or off. */
export function soundToggle() {
  const box = h('input#alert-sound', { attrs: { type: 'checkbox' } });
  box.checked = enabled();
  box.addEventListener('change', () => {
    setEnabled(box.checked);
    if (box.checked) playAlert('reannounce'); // let the user hear what it sounds like
  });
  return h('label.sound-toggle', { attrs: { for: 'alert-sound' } }, box, h('span', { i18n: ['triage.sound'] }));
}

export function soundSnapshot() {
  return { enabled: enabled(), played, lastKind, context: audio ? audio.state : null };
}
