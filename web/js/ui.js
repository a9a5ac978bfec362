// Shared UI pieces: element builder, error banner, notices, consult cards, badges,
// waiting-time ticker. User data is only ever set with textContent, never as HTML.

import { t, has, setText, setAttr, formatTime, formatDateTime } from './i18n.js';
import { serverNow } from './api.js';
import { STORE_UNAVAILABLE } from './outage.js';

export const URGENCY_RANK = { critical: 0, urgent: 1, routine: 2 };

/** h('div.card#x', {dataset, attrs, on, text, i18n:[key,args]}, ...children) */
export function h(spec, opts = {}, ...children) {
  const m = /^([a-z0-9-]+)?((?:[.#][\w-]+)*)$/i.exec(spec);
  const el = document.createElement((m && m[1]) || 'div');
  if (m && m[2]) {
    for (const part of m[2].match(/[.#][\w-]+/g) || []) {
      if (part[0] === '.') el.classList.add(part.slice(1));
      else el.id = part.slice(1);
    }
  }
  if (opts.text !== undefined && opts.text !== null) el.textContent = String(opts.text);
  if (opts.i18n) setText(el, opts.i18n[0], opts.i18n[1]);
  if (opts.attrs) for (const [k, v] of Object.entries(opts.attrs)) if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v === true ? '' : String(v));
  if (opts.i18nAttrs) for (const [k, v] of Object.entries(opts.i18nAttrs)) setAttr(el, k, v);
  if (opts.dataset) for (const [k, v] of Object.entries(opts.dataset)) if (v !== undefined && v !== null) el.dataset[k] = String(v);
  if (opts.on) for (const [k, v] of Object.entries(opts.on)) el.addEventListener(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

/** 'smooth', or 'auto' for someone who asked for less motion (prefers-reduced-motion). */
export function scrollBehavior() {
  return window.matchMedia && window.matchMedia('(prefers-reduced-motion: reduce)').matches ? 'auto' : 'smooth';
}

export function $(sel, root = document) {
  return root.querySelector(sel);
}

// ---- errors ----------------------------------------------------------------------

let lastError = null;
const SHOW_SERVER_DETAIL = new Set(['bad_request', 'internal', 'session_not_here', 'http_server', 'http_client']);

export function getLastError() {
  return lastError;
}

/** Translated text for an error code, falling back to the server's message. */
export function errorText(code, message) {
  if (code && has(`errors.${code}`)) return t(`errors.${code}`);
  if (message) return message;
  return t('errors.unknown');
}

/**
 * Show the error banner (#error-banner), except for `store_unavailable`, which the outage
 * notice shows instead. `err` is an ApiError, a server `error`
 * message, or {code, message}. The server's message is shown as a detail when the
 * code alone does not say enough (bad_request says which field). `key` replaces the
 * generic text of the code with a more precise one for where it happened (the banner's
 * data-code and lastError keep the server's code).
 */
export function showError(err, { context, key } = {}) {
  const code = (err && err.code) || 'unknown';
  const message = (err && err.message) || '';
  lastError = { code, message, context: context || null, at: Date.now() };
  // #outage-notice (outage.js) says what the outage affects, and clears itself after it.
  if (code === STORE_UNAVAILABLE) return;
  const banner = document.getElementById('error-banner');
  if (!banner) return;
  banner.dataset.code = code;
  const text = banner.querySelector('.error-text');
  const detail = banner.querySelector('.error-detail');
  if (key && has(key)) setText(text, key);
  else if (context) setText(text, 'errors.withContext', { context: { t: context }, error: { t: has(`errors.${code}`) ? `errors.${code}` : 'errors.unknown' } });
  else if (has(`errors.${code}`)) setText(text, `errors.${code}`);
  else if (message) {
    delete text.dataset.i18n;
    text.textContent = message;
  } else setText(text, 'errors.unknown');
  const showDetail = message && (SHOW_SERVER_DETAIL.has(code) || !has(`errors.${code}`));
  detail.textContent = showDetail ? `${message} (${code})` : '';
  detail.hidden = !showDetail;
  banner.hidden = false;
}

export function clearError() {
  const banner = document.getElementById('error-banner');
  if (banner) banner.hidden = true;
}

export function setupErrorBanner() {
  const banner = document.getElementById('error-banner');
  if (!banner) return;
  banner.querySelector('.error-close').addEventListener('click', clearError);
}

// ---- notices (non-error, transient) ---------------------------------------------

let noticeTimer = null;
/**
 * Say something to screen readers at once: #announce-polite / #announce-assertive, two
 * visually hidden live regions made once, before any text, so every text is announced
 * (a region appearing together with its text often is not). Critical consults are
 * announced assertively. Returns the region.
 */
export function announce(key, args, { assertive = false } = {}) {
  const id = assertive ? 'announce-assertive' : 'announce-polite';
  const el = document.getElementById(id);
  if (!el) return null;
  setText(el, key, args);
  el.dataset.at = String(Date.now());
  return el;
}

/** The two live regions of announce(), once per page (app.js, at start). */
export function setupAnnouncer() {
  for (const [id, live] of [['announce-polite', 'polite'], ['announce-assertive', 'assertive']]) {
    if (document.getElementById(id)) continue;
    document.body.append(h(`p#${id}.visually-hidden`, { attrs: { 'aria-live': live, 'aria-atomic': 'true', role: live === 'assertive' ? 'alert' : 'status' } }));
  }
}

export function showNotice(key, args, { timeout = 6000 } = {}) {
  const el = document.getElementById('notice');
  if (!el) return;
  setText(el, key, args);
  el.hidden = false;
  clearTimeout(noticeTimer);
  if (timeout) noticeTimer = setTimeout(() => { el.hidden = true; }, timeout);
}

// ---- labels ------------------------------------------------------------------------

function specialtyKey(name) {
  return `specialties.${String(name || '').replace(/-/g, '_')}`;
}

export function specialtyLabel(name) {
  if (has(specialtyKey(name))) return { t: specialtyKey(name) };
  const s = String(name || '').replace(/[_-]+/g, ' ');
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** An element showing a specialty name (translated when known). */
export function specialtyEl(name, tag = 'span') {
  const el = document.createElement(tag);
  el.className = 'specialty';
  if (has(specialtyKey(name))) setText(el, specialtyKey(name));
  else el.textContent = specialtyLabel(name);
  return el;
}

export function urgencyBadge(urgency) {
  const u = URGENCY_RANK[urgency] !== undefined ? urgency : 'routine';
  return h(`span.badge.urgency-badge.urgency-${u}`, { i18n: [`urgency.${u}`], dataset: { urgency: u } });
}

export function stateBadge(state, kind = 'consult') {
  return h(`span.badge.state-badge.state-${state}`, { i18n: [`${kind}State.${state}`], dataset: { state } });
}

/** Pseudonymous ids and refs are Latin strings: keep them left-to-right inside Arabic. */
export function ltr(text, cls = 'ltr') {
  return h(`bdi.${cls}`, { text, attrs: { dir: 'ltr' } });
}

// ---- waiting time ------------------------------------------------------------------

export function durationArgs(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return ['time.seconds', { s }];
  const m = Math.floor(s / 60);
  if (m < 60) return ['time.minutesSeconds', { m, s: String(s % 60).padStart(2, '0') }];
  const hrs = Math.floor(m / 60);
  return ['time.hoursMinutes', { h: hrs, m: String(m % 60).padStart(2, '0') }];
}

export function waitingEl(since) {
  const el = h('span.waiting-time', { dataset: { since } });
  updateWaiting(el);
  return el;
}

function updateWaiting(el) {
  const since = Number(el.dataset.since);
  if (!Number.isFinite(since)) return;
  const [key, args] = durationArgs(serverNow() - since);
  setText(el, key, args);
}

let tickerStarted = false;
export function startWaitingTicker() {
  if (tickerStarted) return;
  tickerStarted = true;
  setInterval(() => {
    for (const el of document.querySelectorAll('.waiting-time[data-since]')) updateWaiting(el);
  }, 1000);
}

/** A <time>: the clock time, or with `withDate` the date and the clock time. */
export function timeEl(epochSeconds, { withDate = false } = {}) {
  const format = withDate ? formatDateTime : formatTime;
  const el = h('time', { text: format(epochSeconds), attrs: { datetime: new Date(epochSeconds * 1000).toISOString() } });
  el.dataset.epoch = String(epochSeconds);
  if (withDate) el.dataset.format = 'datetime';
  return el;
}

export function refreshTimes(root = document) {
  for (const el of root.querySelectorAll('time[data-epoch]')) {
    const format = el.dataset.format === 'datetime' ? formatDateTime : formatTime;
    el.textContent = format(Number(el.dataset.epoch));
  }
}

// ---- consults ----------------------------------------------------------------------

export function sortQueue(consults) {
  return consults.slice().sort((a, b) => {
    const ra = URGENCY_RANK[a.urgency] ?? 3;
    const rb = URGENCY_RANK[b.urgency] ?? 3;
    if (ra !== rb) return ra - rb;
    return (a.created_at || 0) - (b.created_at || 0);
  });
}

export const OPEN_STATES = new Set(['waiting', 'accepted', 'live']);

function field(labelKey, valueEl, cls = '') {
  return h(`div.field${cls ? `.${cls}` : ''}`, {},
    h('span.field-label', { i18n: [labelKey] }),
    h('span.field-value', {}, valueEl));
}

/**
 * A consult card: li.consult-item[data-consult-id][data-state][data-urgency].
 * `actions` is a list of elements (buttons) placed in the card's action area.
 */
export function consultCard(c, { actions = [], showFacility = true, showReferrer = true, extra = null } = {}) {
  const u = URGENCY_RANK[c.urgency] !== undefined ? c.urgency : 'routine';
  const open = OPEN_STATES.has(c.state);
  const li = h(`li.consult-item.card.urgency-${u}.state-${c.state}`, {
    dataset: { consultId: c.id, state: c.state, urgency: u },
  });
  const head = h('div.card-head', {},
    urgencyBadge(u),
    specialtyEl(c.specialty, 'strong'),
    stateBadge(c.state));
  if (c.state === 'waiting' && c.created_at) {
    head.append(h('span.waiting', {}, h('span.waiting-label', { i18n: ['consult.waiting'] }), ' ', waitingEl(c.created_at)));
  }
  li.append(head);
  li.append(h('p.summary', { text: c.summary || '', attrs: { dir: 'auto' } }));
  const meta = h('div.card-meta', {},
    field('consult.patientRef', ltr(c.patient_ref || '—'), 'patient-ref'));
  if (showFacility) meta.append(field('consult.facility', ltr(c.facility || '—'), 'facility'));
  if (showReferrer && c.referrer) meta.append(field('consult.referrer', h('span', { text: c.referrer.name || c.referrer.sub, attrs: { dir: 'auto' } }), 'referrer'));
  if (c.specialist) meta.append(field('consult.specialist', h('span', { text: c.specialist.name || c.specialist.sub, attrs: { dir: 'auto' } }), 'specialist'));
  if (c.created_at) meta.append(field('consult.created', timeEl(c.created_at), 'created'));
  li.append(meta);
  if (extra) li.append(extra);
  if (actions.length) li.append(h('div.card-actions', {}, ...actions));
  if (!open) li.classList.add('closed');
  return li;
}

// ---- buttons -----------------------------------------------------------------------

/** Disable a button while an async action runs; returns the action's result. */
export async function busy(button, fn) {
  if (!button) return fn();
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

/** Keep keyboard focus on the same button across a list re-render; returns a restorer. */
export function rememberFocus(container) {
  const el = document.activeElement;
  if (!el || !container.contains(el) || !el.dataset) return () => {};
  const id = el.dataset.consultId || el.dataset.sessionId;
  const cls = Array.from(el.classList).find((c) => c.endsWith('-button'));
  if (!id || !cls) return () => {};
  const key = el.dataset.consultId ? 'consult-id' : 'session-id';
  return () => {
    const again = container.querySelector(`.${CSS.escape(cls)}[data-${key}="${CSS.escape(id)}"]`);
    if (again && !again.hidden) again.focus();
  };
}
