// Referrer page: create a consult, follow the facility's consults live, cancel while
// waiting, and join the session automatically once a specialist accepts.
//
// Element ids / selectors for tests (see also app.js and sessionlayout.js):
//   #consult-form                      the new-consult form
//   #specialty                         <select>, options from GET /api/config
//   #urgency-critical, #urgency-urgent, #urgency-routine   radio inputs (name=urgency)
//   #consult-summary                   textarea (1–1000 characters), #summary-count
//   #patient-ref                       input (letters, digits, - _ .; 1–64)
//   #create-consult                    submit button
//   #specialty-error, #urgency-error, #summary-error, #patient-ref-error   field errors
//   #consult-list                      ul of li.consult-item[data-consult-id][data-state][data-urgency]
//   .cancel-button[data-consult-id]    first step of cancelling (waiting consults only)
//   .cancel-confirm-button[data-consult-id]  second step: actually cancels
//   .join-button[data-session-id][data-consult-id]  own accepted/live consults not joined
//   #consult-empty, #consult-count
//   Session view: #session-view, #local-video, #remote-video, #roster, #leave,
//   #connection-state, #observer-notice, #end-session, #session-ended, #session-back
//   Shared: #error-banner, #notice, #ws-state, #lang-toggle, #signin-*
//   Recording in the session view: #record-request, #recording-indicator[data-state],
//   #recording-consent, #recording-consent-yes, #recording-consent-no, #record-stop,
//   #recording-withdraw (see sessionrecording.js)
//   #recordings-section ("My recordings", hidden until there is one): see recordings.js
//   Triage status and case (referrercase.js): .queue-status[data-position], .triage-status,
//   .triage-history (li.transfer-entry, li.decline-entry), .attach-button[data-consult-id],
//   #attach-input, .upload-status[data-state][data-code], li.attachment-item, .open-attachment,
//   #attachment-viewer (attachmentviewer.js), .report-view with .report-download (report.js)
//   Session panels (sessionpanels.js): #session-attachments, #chat, #session-report
//   Hook: await window.jisr.state()  (see hook.js); adds `consults` (with position),
//   `report`, `reports`, `positions`, `attachments`, `uploads`, `viewer`, `chat`,
//   `recording` (session), `recordings` and `player`.
//
// Auto-join: when one of this user's own consults is (or becomes) accepted/live, the page
// joins its session unless the user left that session in this tab before.

import { startPage } from './app.js';
import { setupPastConsults } from './pastconsults.js';
import { setText } from './i18n.js';
import { api } from './api.js';
import { startTimeline } from './timeline.js';
import { registerHookSource } from './hook.js';
import { setupRecordings } from './recordings.js';
import { caseExtras, caseActions, setupReferrerCase, positionOf } from './referrercase.js';
import { setupSessionPanels } from './sessionpanels.js';
import { h, showError, clearError, showNotice, consultCard, sortQueue, OPEN_STATES, busy, specialtyLabel, rememberFocus } from './ui.js';

const STATE_RANK = { waiting: 0, accepted: 1, live: 2, ended: 3, cancelled: 3, expired: 3 };
const LEFT_KEY = 'jisr.leftSessions';
const PATIENT_REF_RE = /^[A-Za-z0-9._-]{1,64}$/;

const consults = new Map();
let ctx = null;

function leftSessions() {
  try {
    return new Set(JSON.parse(sessionStorage.getItem(LEFT_KEY) || '[]'));
  } catch {
    return new Set();
  }
}

function rememberLeft(sessionId) {
  const s = leftSessions();
  s.add(sessionId);
  try { sessionStorage.setItem(LEFT_KEY, JSON.stringify(Array.from(s).slice(-50))); } catch { /* ignore */ }
}

function merge(c) {
  if (!c || !c.id) return null;
  const old = consults.get(c.id);
  if (old && (STATE_RANK[old.state] ?? 0) > (STATE_RANK[c.state] ?? 0)) return old;
  consults.set(c.id, c);
  return c;
}

function isMine(c) {
  return c.referrer && c.referrer.sub === ctx.me.sub;
}

function joinable(c) {
  return isMine(c) && (c.state === 'accepted' || c.state === 'live') && c.session_id;
}

// ---- form --------------------------------------------------------------------------

function fillSpecialties(list) {
  const sel = document.getElementById('specialty');
  const keep = sel.value;
  for (const opt of Array.from(sel.options)) if (opt.value) opt.remove();
  for (const name of list) {
    const label = specialtyLabel(name);
    const opt = h('option', { attrs: { value: name } });
    if (typeof label === 'string') opt.textContent = label;
    else setText(opt, label.t);
    sel.append(opt);
  }
  if (keep && list.includes(keep)) sel.value = keep;
}

function fieldError(id, key, args) {
  const el = document.getElementById(id);
  if (!key) {
    el.hidden = true;
    el.textContent = '';
    return;
  }
  setText(el, key, args);
  el.hidden = false;
}

function updateCount() {
  const ta = document.getElementById('consult-summary');
  setText(document.getElementById('summary-count'), 'referrer.summaryCount', { n: ta.value.length, max: 1000 });
}

function validate(form) {
  const fields = {
    specialty: form.specialty.value,
    urgency: (form.querySelector('input[name=urgency]:checked') || {}).value || '',
    summary: form.summary.value.trim(),
    patient_ref: form.patient_ref.value.trim(),
  };
  const errors = [];
  fieldError('specialty-error', fields.specialty ? null : 'validation.specialty');
  if (!fields.specialty) errors.push('specialty');
  fieldError('urgency-error', fields.urgency ? null : 'validation.urgency');
  if (!fields.urgency) errors.push('urgency-critical');
  const sumBad = fields.summary.length < 1 || fields.summary.length > 1000;
  fieldError('summary-error', sumBad ? 'validation.summary' : null);
  if (sumBad) errors.push('consult-summary');
  const refBad = !PATIENT_REF_RE.test(fields.patient_ref);
  fieldError('patient-ref-error', refBad ? 'validation.patientRef' : null);
  if (refBad) errors.push('patient-ref');
  for (const [id, bad] of [['specialty', !fields.specialty], ['consult-summary', sumBad], ['patient-ref', refBad]]) {
    document.getElementById(id).setAttribute('aria-invalid', bad ? 'true' : 'false');
  }
  return { fields, errors };
}

async function onSubmit(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const { fields, errors } = validate(form);
  if (errors.length) {
    document.getElementById(errors[0]).focus();
    return;
  }
  await busy(document.getElementById('create-consult'), async () => {
    try {
      const created = await api.createConsult(fields);
      clearError();
      merge(created);
      render();
      form.reset();
      updateCount();
      showNotice('referrer.created', { specialty: specialtyLabel(created.specialty || fields.specialty) });
      const item = document.querySelector(`.consult-item[data-consult-id="${CSS.escape(created.id)}"]`);
      if (item) item.classList.add('new-arrival');
    } catch (err) {
      if (err.code === 'unknown_specialty') fieldError('specialty-error', 'errors.unknown_specialty');
      showError(err);
    }
  });
}

// ---- list --------------------------------------------------------------------------

function actionsFor(c) {
  const actions = [];
  if (c.state === 'waiting') {
    const cancel = h('button.btn.btn-secondary.cancel-button', { attrs: { type: 'button' }, dataset: { consultId: c.id }, i18n: ['referrer.cancel'] });
    const confirm = h('button.btn.btn-danger.cancel-confirm-button', { attrs: { type: 'button', hidden: true }, dataset: { consultId: c.id }, i18n: ['referrer.cancelConfirm'] });
    const keep = h('button.btn.btn-secondary.cancel-keep-button', { attrs: { type: 'button', hidden: true }, dataset: { consultId: c.id }, i18n: ['referrer.cancelKeep'] });
    cancel.addEventListener('click', () => {
      cancel.hidden = true;
      confirm.hidden = false;
      keep.hidden = false;
      confirm.focus();
    });
    keep.addEventListener('click', () => {
      cancel.hidden = false;
      confirm.hidden = true;
      keep.hidden = true;
    });
    confirm.addEventListener('click', () => busy(confirm, async () => {
      try {
        const updated = await api.cancelConsult(c.id);
        merge(updated);
        render();
        showNotice('referrer.cancelled');
      } catch (err) {
        showError(err);
        if (err.code === 'invalid_state' || err.code === 'consult_not_found') refresh();
      }
    }));
    actions.push(cancel, confirm, keep);
  }
  if (joinable(c) && !(ctx.session.active && ctx.session.sessionId === c.session_id)) {
    actions.push(h('button.btn.btn-primary.btn-large.join-button', {
      attrs: { type: 'button' },
      dataset: { sessionId: c.session_id, consultId: c.id },
      i18n: ['referrer.join'],
      on: { click: () => ctx.joinSession(c.session_id, c) },
    }));
  }
  actions.push(...caseActions(c));
  return actions;
}

function statusLine(c) {
  if (c.state === 'waiting') return h('p.status-line', { i18n: ['referrer.statusWaiting'] });
  if ((c.state === 'accepted' || c.state === 'live') && c.specialist) {
    return h('p.status-line.status-accepted', { i18n: ['referrer.statusAccepted', { name: c.specialist.name || c.specialist.sub }] });
  }
  return null;
}

function render() {
  const list = document.getElementById('consult-list');
  const all = Array.from(consults.values());
  const open = sortQueue(all.filter((c) => OPEN_STATES.has(c.state)));
  const closed = all.filter((c) => !OPEN_STATES.has(c.state))
    .sort((a, b) => (b.ended_at || b.cancelled_at || b.created_at || 0) - (a.ended_at || a.cancelled_at || a.created_at || 0));
  const focus = rememberFocus(list);
  list.replaceChildren(...[...open, ...closed].map((c) => consultCard(c, {
    actions: actionsFor(c),
    showFacility: false,
    extra: caseExtras(c, statusLine(c)),
  })));
  document.getElementById('consult-empty').hidden = consults.size > 0;
  setText(document.getElementById('consult-count'), 'referrer.openCount', { n: open.length });
  focus();
}

async function refresh() {
  try {
    const data = await api.listConsults();
    for (const c of (data && data.consults) || []) merge(c);
    render();
    maybeAutoJoin();
  } catch (err) {
    showError(err);
  }
}

function maybeAutoJoin() {
  if (!ctx || ctx.session.active) return;
  const left = leftSessions();
  const candidates = Array.from(consults.values())
    .filter((c) => joinable(c) && !left.has(c.session_id))
    .sort((a, b) => (b.accepted_at || 0) - (a.accepted_at || 0));
  if (!candidates.length) return;
  const c = candidates[0];
  showNotice('referrer.autoJoining', { name: c.specialist ? c.specialist.name || c.specialist.sub : '' });
  ctx.joinSession(c.session_id, c).catch(showError);
}

startPage({
  page: 'referrer',
  roles: ['referrer'],
  init: async (c) => {
    ctx = c;
    fillSpecialties((ctx.config && ctx.config.specialties) || []);
    const form = document.getElementById('consult-form');
    form.addEventListener('submit', onSubmit);
    document.getElementById('consult-summary').addEventListener('input', updateCount);
    for (const el of form.querySelectorAll('input[name=urgency]')) el.addEventListener('change', () => fieldError('urgency-error', null));
    updateCount();

    ctx.sig.addEventListener('consult.updated', (e) => {
      const merged = merge(e.detail.consult);
      if (!merged) return;
      render();
      if (merged.state === 'accepted' && isMine(merged) && !ctx.session.active) startTimeline('accepted.push');
      if (merged.state === 'accepted' && isMine(merged)) {
        showNotice('referrer.acceptedNotice', { name: merged.specialist ? merged.specialist.name || merged.specialist.sub : '' });
      }
      maybeAutoJoin();
    });
    ctx.sig.addEventListener('ready', () => refresh());
    const library = setupRecordings(ctx, { hideWhenEmpty: true });
    setupPastConsults();
    ctx.onSessionExit = ({ sessionId, reason }) => {
      if (['left', 'replaced', 'error'].includes(reason) && sessionId) rememberLeft(sessionId);
      render();
      refresh();
      library.refreshSoon(0);
    };
    setupReferrerCase(ctx, {
      getConsults: () => Array.from(consults.values()),
      merge: (x) => merge(x),
      render: () => render(),
    });
    setupSessionPanels(ctx, {
      pageAttachments: () => Array.from(consults.values())
        .flatMap((x) => (x.attachments || []).map((a) => ({ ...a, consult_id: x.id }))),
    });
    registerHookSource('page', () => ({
      consults: Array.from(consults.values()).map((x) => ({
        id: x.id, state: x.state, urgency: x.urgency, specialty: x.specialty, session_id: x.session_id || null,
        position: positionOf(x), attachments: (x.attachments || []).length, report: !!x.report,
        declines: (x.declines || []).length, transfers: (x.transfers || []).length,
        escalated: !!x.escalated_at, reannounced: !!x.reannounced_at,
      })),
    }));
    await Promise.all([refresh(), library.refresh()]);
  },
}).catch((err) => {
  console.error('referrer page failed to start', err && err.message);
  showError({ code: 'startup', message: err && err.message });
});
