// Triage on the specialist page: Decline and Transfer on queue items, re-announced and
// escalated consults highlighted (with an optional short sound); on-call presence is
// set up from here too (presence.js).
//
// Elements:
//   Presence: #presence-bar, #presence, #presence-status, #alert-sound, #queue-paused
//   (presence.js)
//   Queue items (li.consult-item):
//     .reannounced / .escalated / .escalated-to-me classes, .triage-flag badge,
//     .triage-history (declines, transfers), .attachment-count
//     .decline-button[data-consult-id], .transfer-button[data-consult-id]
//   #decline-dialog (dialog): #decline-title, .reason-chip, #decline-reason,
//     #decline-error, #decline-confirm, #decline-cancel
//   #transfer-dialog (dialog): #transfer-specialty (select), #transfer-reason,
//     #transfer-error, #transfer-confirm, #transfer-cancel
// Hook (registered as 'triage'): presence {choice, effective, shown, inSession,
//   confirmedAt, sent}, sound {enabled, played, lastKind}, dialog {kind, consultId}|null.
//   The queue entries themselves (with reannounced/escalated flags) come from
//   specialist.js through queueEntry().

import { t, has, setText } from './i18n.js';
import { request, serverNow } from './api.js';
import { registerHookSource } from './hook.js';
import { playAlert, soundSnapshot } from './alertsound.js';
import { h, showNotice, specialtyLabel, specialtyEl, urgencyBadge, ltr, durationArgs } from './ui.js';
import { setupPresence, presenceSnapshot, inSession, onCall } from './presence.js';

export { queuePaused } from './presence.js';

const FLASH_MS = 12000;
const DECLINE_REASONS = ['outsideExpertise', 'otherCritical', 'needsOther', 'needsInfo'];

let ctx = null;
let hooks = { render: () => {}, refresh: () => {}, remove: () => {}, get: () => null };
const flashing = new Map(); // consult id -> 'reannounced' | 'escalated' (recently pushed)
const firstShown = new Map(); // consult id -> Date.now() when first rendered in the queue
let dialog = null; // {kind, consult, el}
const el = {};

export function offeredToMe(c) {
  return !!(ctx && c && Array.isArray(c.offered_to) && c.offered_to.includes(ctx.me.sub));
}

/** Whether a waiting consult belongs in the queue shown now (paused while busy or off). */
export function showsInQueue(c) {
  if (offeredToMe(c)) return true;
  return onCall();
}

// ---- queue items ----------------------------------------------------------------

/** Decline and Transfer buttons for a waiting queue item. */
export function queueActions(c) {
  if (c.state !== 'waiting') return [];
  return [
    h('button.btn.btn-secondary.btn-large.transfer-button', {
      attrs: { type: 'button' }, dataset: { consultId: c.id }, i18n: ['triage.transfer'],
      on: { click: (e) => openDialog('transfer', c.id, e.currentTarget) },
    }),
    h('button.btn.btn-secondary.btn-large.decline-button', {
      attrs: { type: 'button' }, dataset: { consultId: c.id }, i18n: ['triage.decline'],
      on: { click: (e) => openDialog('decline', c.id, e.currentTarget) },
    }),
  ];
}

function historyLines(c) {
  const lines = [];
  for (const tr of c.transfers || []) {
    lines.push(h('li.transfer-entry', { i18n: [tr.reason ? 'triage.transferredWhy' : 'triage.transferred', {
      from: specialtyLabel(tr.from), to: specialtyLabel(tr.to), name: tr.name || tr.sub || '', reason: tr.reason || '',
    }] }));
  }
  for (const d of c.declines || []) {
    lines.push(h('li.decline-entry', { i18n: [d.reason ? 'triage.declinedWhy' : 'triage.declined', { name: d.name || d.sub || '', reason: d.reason || '' }] }));
  }
  return lines;
}

/** Flags and history on a queue item (called by specialist.js for each rendered item). */
export function decorate(li, c) {
  if (!firstShown.has(c.id)) firstShown.set(c.id, Date.now());
  if (c.state !== 'waiting') return li;
  const flags = [];
  if (c.escalated_at) {
    li.classList.add('escalated');
    if (offeredToMe(c)) li.classList.add('escalated-to-me');
    flags.push(h('span.badge.triage-flag.flag-escalated', { dataset: { flag: 'escalated' }, i18n: [offeredToMe(c) ? 'triage.escalatedToYou' : 'triage.escalated'] }));
  } else if (c.reannounced_at) {
    li.classList.add('reannounced');
    flags.push(h('span.badge.triage-flag.flag-reannounced', { dataset: { flag: 'reannounced' }, i18n: ['triage.reannounced'] }));
  }
  if (flashing.has(c.id)) li.classList.add('flash');
  const head = li.querySelector('.card-head');
  if (head && flags.length) head.insertBefore(h('span.triage-flags', {}, ...flags), head.children[2] || null);
  const extra = [];
  const history = historyLines(c);
  if (history.length) extra.push(h('ul.triage-history', {}, ...history));
  const n = (c.attachments || []).length;
  if (n) extra.push(h('p.attachment-count', { i18n: ['casepacket.countBeforeAccept', { n }] }));
  if (extra.length) {
    const box = h('div.triage-extra', {}, ...extra);
    const actions = li.querySelector('.card-actions');
    li.insertBefore(box, actions || null);
  }
  return li;
}

/** The hook's view of a queue entry. */
export function queueEntry(c) {
  return {
    id: c.id,
    state: c.state,
    urgency: c.urgency,
    specialty: c.specialty,
    reannounced: !!c.reannounced_at,
    escalated: !!c.escalated_at,
    offeredToMe: offeredToMe(c),
    declines: (c.declines || []).length,
    transfers: (c.transfers || []).length,
    attachments: (c.attachments || []).length,
    shownAt: firstShown.get(c.id) || null,
  };
}

function flash(id, kind) {
  flashing.set(id, kind);
  setTimeout(() => {
    if (flashing.get(id) === kind) flashing.delete(id);
    const li = document.querySelector(`#queue .consult-item[data-consult-id="${CSS.escape(id)}"]`);
    if (li) li.classList.remove('flash');
  }, FLASH_MS);
}

function onReannounced(c) {
  if (!c || c.state !== 'waiting' || !showsInQueue(c)) return;
  flash(c.id, 'reannounced');
  hooks.render();
  playAlert('reannounce');
  const [waitKey, waitArgs] = durationArgs(serverNow() - (c.created_at || serverNow()));
  showNotice('triage.reannouncedNotice', { urgency: { t: `urgency.${c.urgency}` }, specialty: specialtyLabel(c.specialty), wait: { t: waitKey, args: waitArgs } }, { timeout: 12000 });
}

function onEscalated(c) {
  if (!c || c.state !== 'waiting') return;
  flash(c.id, 'escalated');
  hooks.render();
  if (offeredToMe(c)) {
    playAlert('escalation');
    showNotice('triage.escalatedNotice', { urgency: { t: `urgency.${c.urgency}` }, specialty: specialtyLabel(c.specialty) }, { timeout: 15000 });
  }
}

/** A new waiting consult arrived by push (specialist.js): sound for critical ones. */
export function arrived(c) {
  if (c && c.state === 'waiting' && c.urgency === 'critical' && showsInQueue(c)) playAlert('critical');
}

// ---- decline / transfer dialogs ---------------------------------------------------

function caseLine(c) {
  return h('p.dialog-case', {}, urgencyBadge(c.urgency), ' ', specialtyEl(c.specialty, 'strong'), ' ',
    h('span.field-label', { i18n: ['consult.patientRef'] }), ltr(c.patient_ref || '—'));
}

function buildDeclineDialog() {
  const reason = h('textarea#decline-reason', { attrs: { rows: 3, maxlength: 500, required: true, dir: 'auto', 'aria-describedby': 'decline-help decline-error' } });
  const chips = h('div.reason-chips', { attrs: { role: 'group', 'aria-label': t('triage.quickReasons') } }, ...DECLINE_REASONS.map((key) => h('button.btn.btn-secondary.reason-chip', {
    attrs: { type: 'button' }, dataset: { reason: key }, i18n: [`triage.reasons.${key}`],
    on: { click: () => { reason.value = t(`triage.reasons.${key}`); reason.focus(); clearDialogError(); } },
  })));
  const declineConfirm = h('button#decline-confirm.btn.btn-danger.btn-large', { attrs: { type: 'submit' }, i18n: ['triage.declineConfirm'] });
  const declineCancel = h('button#decline-cancel.btn.btn-secondary.btn-large', { attrs: { type: 'button' }, i18n: ['triage.keep'], on: { click: () => closeDialog() } });
  const form = h('form.dialog-form', { attrs: { novalidate: true } },
    h('h2#decline-title', { i18n: ['triage.declineTitle'] }),
    h('div.dialog-case-box'),
    h('p#decline-help.field-help', { i18n: ['triage.declineHelp'] }),
    chips,
    h('label.label', { attrs: { for: 'decline-reason' }, i18n: ['triage.reason'] }),
    reason,
    h('p#decline-error.field-error', { attrs: { hidden: true, role: 'alert' } }),
    h('div.dialog-actions', {}, declineConfirm, declineCancel));
  form.addEventListener('submit', (e) => { e.preventDefault(); submitDialog(); });
  const decline = h('dialog#decline-dialog.triage-dialog', { attrs: { 'aria-labelledby': 'decline-title' } }, form);
  return { decline, reason, declineConfirm };
}

function buildTransferDialog() {
  const select = h('select#transfer-specialty', { attrs: { required: true, 'aria-describedby': 'transfer-error' } });
  const treason = h('textarea#transfer-reason', { attrs: { rows: 3, maxlength: 500, required: true, dir: 'auto', 'aria-describedby': 'transfer-help transfer-error' } });
  const transferConfirm = h('button#transfer-confirm.btn.btn-primary.btn-large', { attrs: { type: 'submit' }, i18n: ['triage.transferConfirm'] });
  const transferCancel = h('button#transfer-cancel.btn.btn-secondary.btn-large', { attrs: { type: 'button' }, i18n: ['triage.keep'], on: { click: () => closeDialog() } });
  const form = h('form.dialog-form', { attrs: { novalidate: true } },
    h('h2#transfer-title', { i18n: ['triage.transferTitle'] }),
    h('div.dialog-case-box'),
    h('p#transfer-help.field-help', { i18n: ['triage.transferHelp'] }),
    h('label.label', { attrs: { for: 'transfer-specialty' }, i18n: ['triage.transferTo'] }),
    select,
    h('label.label', { attrs: { for: 'transfer-reason' }, i18n: ['triage.reason'] }),
    treason,
    h('p#transfer-error.field-error', { attrs: { hidden: true, role: 'alert' } }),
    h('div.dialog-actions', {}, transferConfirm, transferCancel));
  form.addEventListener('submit', (e) => { e.preventDefault(); submitDialog(); });
  const transfer = h('dialog#transfer-dialog.triage-dialog', { attrs: { 'aria-labelledby': 'transfer-title' } }, form);
  return { transfer, treason, select, transferConfirm };
}

function buildDialogs() {
  Object.assign(el, buildDeclineDialog(), buildTransferDialog());
  for (const d of [el.decline, el.transfer]) {
    d.addEventListener('close', () => {
      const opener = dialog && dialog.opener;
      dialog = null;
      if (opener && opener.isConnected) opener.focus();
    });
    d.addEventListener('input', () => clearDialogError(d));
    document.body.append(d);
  }
}

function fillSpecialties(current) {
  const list = (ctx.config && ctx.config.specialties) || [];
  const keep = el.select.value;
  el.select.replaceChildren(h('option', { attrs: { value: '' }, i18n: ['triage.chooseSpecialty'] }));
  for (const name of list) {
    if (name === current) continue;
    const label = specialtyLabel(name);
    const opt = h('option', { attrs: { value: name } });
    if (typeof label === 'string') opt.textContent = label;
    else setText(opt, label.t);
    el.select.append(opt);
  }
  if (keep && keep !== current && list.includes(keep)) el.select.value = keep;
}

function openDialog(kind, consultId, opener) {
  const c = hooks.get(consultId);
  if (!c) return;
  if (dialog) closeDialog();
  const d = el[kind];
  d.querySelector('.dialog-case-box').replaceChildren(caseLine(c));
  clearDialogError(d);
  if (kind === 'decline') {
    el.reason.value = '';
    el.declineConfirm.disabled = false;
  } else {
    fillSpecialties(c.specialty);
    el.select.value = '';
    el.treason.value = '';
    el.transferConfirm.disabled = false;
  }
  d.dataset.consultId = c.id;
  dialog = { kind, consultId: c.id, opener };
  d.showModal();
  (kind === 'decline' ? el.reason : el.select).focus();
}

function closeDialog() {
  if (!dialog) return;
  const d = el[dialog.kind];
  if (d.open) d.close();
  dialog = null;
}

function clearDialogError(d) {
  for (const id of ['decline-error', 'transfer-error']) {
    const e = document.getElementById(id);
    if (e && (!d || d.contains(e))) e.hidden = true;
  }
  for (const x of [el.reason, el.treason, el.select]) if (x) x.removeAttribute('aria-invalid');
}

function dialogError(key, args, field) {
  const e = document.getElementById(dialog.kind === 'decline' ? 'decline-error' : 'transfer-error');
  setText(e, key, args);
  e.hidden = false;
  if (field) {
    field.setAttribute('aria-invalid', 'true');
    field.focus();
  }
}

async function submitDialog() {
  if (!dialog) return;
  const { kind, consultId } = dialog;
  const confirm = kind === 'decline' ? el.declineConfirm : el.transferConfirm;
  if (confirm.disabled) return;
  const reason = (kind === 'decline' ? el.reason : el.treason).value.trim();
  if (kind === 'transfer' && !el.select.value) {
    dialogError('triage.needSpecialty', null, el.select);
    return;
  }
  if (!reason) {
    dialogError('triage.needReason', null, kind === 'decline' ? el.reason : el.treason);
    return;
  }
  confirm.disabled = true;
  confirm.setAttribute('aria-busy', 'true');
  try {
    const path = `/api/consults/${encodeURIComponent(consultId)}/${kind}`;
    const body = kind === 'decline' ? { reason } : { specialty: el.select.value, reason };
    const updated = await request('POST', path, body);
    closeDialog();
    hooks.remove(consultId, updated);
    if (kind === 'decline') showNotice('triage.declinedNotice');
    else showNotice('triage.transferredNotice', { specialty: specialtyLabel(body.specialty) });
  } catch (err) {
    confirm.disabled = false;
    if (err.code === 'invalid_state' || err.code === 'consult_not_found') {
      dialogError('triage.noLongerWaiting');
      confirm.disabled = true;
      hooks.refresh();
    } else if (err.code === 'unknown_specialty' || err.code === 'bad_request') {
      dialogError(`errors.${err.code}`, null, kind === 'transfer' ? el.select : el.reason);
    } else {
      dialogError(err.code && has(`errors.${err.code}`) ? `errors.${err.code}` : 'errors.unknown');
    }
  } finally {
    confirm.removeAttribute('aria-busy');
  }
}

function consultChanged(c) {
  if (!dialog || !c || c.id !== dialog.consultId) return;
  if (c.state !== 'waiting') {
    const confirm = dialog.kind === 'decline' ? el.declineConfirm : el.transferConfirm;
    confirm.disabled = true;
    if (c.specialist) dialogError('triage.takenMeanwhile', { name: c.specialist.name || c.specialist.sub });
    else dialogError('triage.noLongerWaiting');
  }
}

// ---- setup ------------------------------------------------------------------------

/**
 * @param {object} pageCtx  startPage's context
 * @param {object} o
 * @param {Function} o.render   re-render the queue
 * @param {Function} o.refresh  re-read GET /api/consults
 * @param {Function} o.remove   (id, updatedConsult) the consult left this specialist's queue
 * @param {Function} o.get      (id) -> the consult as the page knows it
 */
export function setupTriage(pageCtx, o) {
  ctx = pageCtx;
  hooks = { ...hooks, ...o };
  setupPresence(ctx, { render: () => hooks.render(), refresh: () => hooks.refresh() });
  buildDialogs();
  ctx.sig.addEventListener('consult.reannounced', (e) => onReannounced(e.detail.consult));
  ctx.sig.addEventListener('consult.escalated', (e) => onEscalated(e.detail.consult));
  ctx.sig.addEventListener('consult.updated', (e) => consultChanged(e.detail.consult));
  // Consults that left this queue without a push (transferred away, or seen by others)
  // are dropped by an occasional re-read.
  setInterval(() => { if (document.visibilityState === 'visible' && !inSession()) hooks.refresh(); }, 30000);
  registerHookSource('triage', () => ({
    presence: presenceSnapshot(),
    sound: soundSnapshot(),
    dialog: dialog ? { kind: dialog.kind, consultId: dialog.consultId } : null,
  }));
}
