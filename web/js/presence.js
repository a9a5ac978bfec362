// On-call presence on the specialist page (triage.js sets it up with the rest of triage).
//
// WebSocket `presence` {status} -> `presence.ok` {status}: the choice is sent when the
// connection is up (default "available") and every 10 s after (the server forgets it
// after 30 s). While this specialist is in a session the server reports "busy" whatever
// the choice, and the page says "Busy — in session". While the choice is busy or off the
// server pushes no new consults, so the queue is paused here too (only consults
// escalated to this specialist personally are still shown).
//
// Elements:
//   #presence-bar                          the bar (specialist.html); hidden during a call
//                                          (app.css), where the picture comes first
//   #presence[data-choice][data-effective] group of three buttons[aria-pressed]:
//     #presence-available, #presence-busy, #presence-off
//   #presence-status[data-effective]       available | busy | off | in_session | pending
//   One state shows at a time: in a session no choice is shown pressed (the buttons
//   are hidden) and the status says "Busy — in session"; the choice returns after.
//   #alert-sound                           checkbox: alert sounds on/off (alertsound.js)
//   #queue-paused                          shown instead of the queue while busy or off
// Hook (through triage.js): presence {choice, effective, shown, inSession, confirmedAt, sent}.

import { setText, onLangChange } from './i18n.js';
import { soundToggle } from './alertsound.js';
import { h, showError, showNotice } from './ui.js';

const PRESENCE_KEY = 'jisr.presence';
const REFRESH_MS = 10000;
const CHOICES = ['available', 'busy', 'off'];

let ctx = null;
let queue = { render: () => {}, refresh: () => {} };
let choice = 'available';
let effective = null; // the server's answer to the last presence message
let confirmedAt = 0;
let sent = 0;
let sending = false;
let again = false;
const el = {};

function storedChoice() {
  try {
    const v = sessionStorage.getItem(PRESENCE_KEY);
    return CHOICES.includes(v) ? v : 'available';
  } catch {
    return 'available';
  }
}

/** This specialist is in a session as a participant. */
export function inSession() {
  const s = ctx && ctx.session;
  return !!(s && s.active && !s.ended && s.as === 'participant');
}

/** On call by choice: new consults are shown. */
export function onCall() {
  return choice === 'available';
}

/** The queue is paused (busy or off by choice). */
export function queuePaused() {
  return choice !== 'available';
}

function shownStatus() {
  if (inSession()) return 'in_session';
  if (effective === null) return 'pending';
  return effective;
}

async function sendPresence() {
  if (!ctx || !ctx.sig.ready) return;
  if (sending) {
    again = true; // the answer in flight may already be out of date
    return;
  }
  sending = true;
  again = false;
  const asked = choice;
  try {
    const reply = await ctx.sig.request('presence', { status: asked }, { timeout: 8000 });
    effective = reply.status || asked;
    confirmedAt = Date.now();
    sent += 1;
  } catch (err) {
    if (!['disconnected', 'not_connected', 'timeout'].includes(err.code)) showError(err);
  } finally {
    sending = false;
  }
  renderPresence();
  if (asked !== choice || again) sendPresence();
}

function setChoice(next) {
  if (!CHOICES.includes(next) || next === choice) {
    renderPresence();
    return;
  }
  const wasAvailable = choice === 'available';
  choice = next;
  try { sessionStorage.setItem(PRESENCE_KEY, next); } catch { /* ignore */ }
  effective = null;
  renderPresence();
  sendPresence();
  queue.render();
  // Back on call: what is waiting now (nothing was pushed while busy or off).
  if (!wasAvailable && next === 'available') queue.refresh();
  showNotice(`presence.notice.${next}`);
}

function buildPresence() {
  const bar = document.getElementById('presence-bar');
  if (!bar) return;
  const group = h('div#presence.presence-control', { attrs: { role: 'group', 'aria-labelledby': 'presence-label' } });
  for (const value of CHOICES) {
    const btn = h(`button#presence-${value}.btn.presence-option.presence-${value}`, {
      attrs: { type: 'button', 'aria-pressed': 'false' },
      dataset: { value },
      on: { click: () => setChoice(value) },
    }, h('span.presence-dot', { attrs: { 'aria-hidden': 'true' } }), h('span', { i18n: [`presence.${value}`] }));
    group.append(btn);
    el[value] = btn;
  }
  el.group = group;
  el.status = h('span#presence-status.presence-status', { attrs: { role: 'status', 'aria-live': 'polite' } });
  bar.replaceChildren(
    h('span#presence-label.presence-label', { i18n: ['presence.label'] }),
    group,
    el.status,
    h('span.presence-end', {}, soundToggle()),
  );
  renderPresence();
}

function renderPresence() {
  if (!el.group) return;
  const shown = shownStatus();
  const busyInSession = shown === 'in_session';
  el.group.dataset.choice = choice;
  el.group.dataset.effective = shown;
  el.group.hidden = busyInSession;
  for (const value of CHOICES) el[value].setAttribute('aria-pressed', value === choice && !busyInSession ? 'true' : 'false');
  el.status.dataset.effective = shown;
  setText(el.status, `presence.status.${shown}`);
  const paused = document.getElementById('queue-paused');
  if (paused) {
    paused.hidden = choice === 'available';
    if (choice !== 'available') setText(paused, `presence.paused.${choice}`);
  }
}

/** Forget the server's answer (a new or lost connection) and show it as pending. */
function unconfirmed() {
  effective = null;
  renderPresence();
}

/**
 * @param {object} pageCtx  startPage's context
 * @param {object} o        the queue: render() again, refresh() by re-reading it
 */
export function setupPresence(pageCtx, { render, refresh }) {
  ctx = pageCtx;
  queue = { render, refresh };
  choice = storedChoice();
  buildPresence();
  ctx.sig.addEventListener('ready', () => { unconfirmed(); sendPresence(); });
  ctx.sig.addEventListener('state', () => { if (!ctx.sig.ready) unconfirmed(); });
  // The session view sets busy on the server by itself; show it, and re-send the
  // choice at once when the session closes (the server does not restore it by itself).
  const view = document.getElementById('session-view');
  if (view) {
    // Re-sent on every change so what the server now says (busy in a session, the
    // choice again after it) shows at once.
    new MutationObserver(() => {
      renderPresence();
      sendPresence();
    }).observe(view, { attributes: true, attributeFilter: ['data-state', 'data-as', 'hidden'] });
  }
  setInterval(sendPresence, REFRESH_MS);
  onLangChange(() => { renderPresence(); });
}

export function presenceSnapshot() {
  const pressed = CHOICES.filter((v) => el[v] && el[v].getAttribute('aria-pressed') === 'true' && !el.group.hidden);
  return { choice, effective, shown: shownStatus(), pressed, inSession: inSession(), confirmedAt: confirmedAt || null, sent };
}
