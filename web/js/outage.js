// The state store's outage, for every page. api.js and signaling.js pass every answer
// from the server through noteAnswer(): a `store_unavailable` refusal (docs/protocol.md)
// shows #outage-notice, which says what cannot be saved and, in a call, that the call
// continues (live media does not need the store). While it shows, GET /readyz is asked on
// a short backoff, and at once after any successful answer, so the notice clears by itself
// within a few seconds of the store's return, on a page that asks nothing by itself too.
//
// Elements: #outage-notice[data-state=clear|outage] (role=status, aria-live=polite; in
//   every page, empty while clear so that filling it is announced): .outage-title,
//   .outage-text, .outage-after[data-call=participant|observer|none]
// Hook (registered by app.js as 'outage'): outage {shown, since, clearedAt, checks, call, text}

import { setText } from './i18n.js';

export const STORE_UNAVAILABLE = 'store_unavailable';
// The last delay repeats: the notice clears at most this long (plus one request) after
// the store is back.
const CHECK_DELAYS_MS = [1000, 1500, 2000, 2500];
// Answers come in bursts (a list and its details): one check for a burst.
const CHECK_GAP_MS = 500;

let page = null;
let callRole = () => null;
let since = null; // ms epoch the outage was first noticed; null while clear
let clearedAt = null; // ms epoch the last outage was over
let refusals = 0; // store_unavailable answers heard, to tell one newer than a check
let checks = 0;
let checkTimer = null;
let checkDueAt = 0;
let checking = false;
let lastCheckAt = 0;
const el = {};

/** Bind #outage-notice; `pageName` ('referrer' | 'specialist' | 'supervisor') picks the
 *  text saying what is affected there. */
export function setupOutageNotice(pageName) {
  page = pageName;
  el.root = document.getElementById('outage-notice');
  renderOutageNotice();
}

/** `role`: () => 'participant' | 'observer' | null (not in a call), asked at each render. */
export function setCallRole(role) {
  callRole = role;
  renderOutageNotice();
}

/** Every answer from the server: its error code, or null when it succeeded. */
export function noteAnswer(code) {
  if (code === STORE_UNAVAILABLE) {
    noteOutage();
    return;
  }
  if (code || since === null || checking) return;
  // It worked, but it may not have needed the store: /readyz says whether the store is back.
  const due = Math.max(Date.now(), lastCheckAt + CHECK_GAP_MS);
  if (checkTimer === null || due < checkDueAt) scheduleCheck(due - Date.now());
}

function noteOutage() {
  refusals += 1;
  if (since !== null) return;
  since = Date.now();
  checks = 0;
  renderOutageNotice();
  scheduleCheck(CHECK_DELAYS_MS[0]);
}

function scheduleCheck(delay) {
  clearTimeout(checkTimer);
  checkDueAt = Date.now() + delay;
  checkTimer = setTimeout(check, delay);
}

async function check() {
  checkTimer = null;
  if (since === null || checking) return;
  checking = true;
  const refusalsBefore = refusals;
  lastCheckAt = Date.now();
  let ready = false;
  try {
    const res = await fetch('/readyz', { cache: 'no-store', headers: { Accept: 'application/json' } });
    ready = res.ok;
  } catch { /* the server is unreachable: the connection badge says so; keep checking */ }
  checking = false;
  checks += 1;
  // A refusal that came while this check was on its way is newer than its answer.
  if (ready && refusals === refusalsBefore) {
    since = null;
    clearedAt = Date.now();
    renderOutageNotice();
    return;
  }
  scheduleCheck(CHECK_DELAYS_MS[Math.min(checks, CHECK_DELAYS_MS.length - 1)]);
}

function build() {
  el.title = document.createElement('strong');
  el.title.className = 'outage-title';
  el.text = document.createElement('span');
  el.text.className = 'outage-text';
  el.after = document.createElement('span');
  el.after.className = 'outage-after';
  const icon = document.createElement('span');
  icon.className = 'outage-icon';
  icon.setAttribute('aria-hidden', 'true');
  icon.textContent = '!';
  const body = document.createElement('p');
  body.className = 'outage-body';
  body.append(el.title, ' ', el.text, ' ', el.after);
  el.root.replaceChildren(icon, body);
}

/** Show the notice as the outage and the call now are (app.js: again when the call changes). */
export function renderOutageNotice() {
  if (!el.root) return;
  const shown = since !== null;
  el.root.dataset.state = shown ? 'outage' : 'clear';
  if (!shown) {
    el.root.replaceChildren();
    return;
  }
  if (!el.root.firstChild) build();
  const call = callRole() || 'none';
  if (el.after.dataset.call === call && el.text.dataset.i18n) return; // unchanged: not announced again
  setText(el.title, 'outage.title');
  setText(el.text, `outage.affected.${page}`);
  setText(el.after, call === 'none' ? 'outage.clearsByItself' : `outage.call.${call}`);
  el.after.dataset.call = call;
}

export function outageSnapshot() {
  const shown = since !== null;
  return {
    outage: {
      shown,
      since,
      clearedAt,
      checks,
      call: shown ? callRole() : null,
      text: shown && el.root ? el.root.textContent.trim() : '',
    },
  };
}
