// Audit page (admins): the chained audit trail of the admin's organisation, from the
// record store (GET /api/audit), searched by patient reference, consult, person and
// dates; exported as JSON lines or FHIR AuditEvent (GET /api/audit/export).
//
// Elements: #audit-form (#audit-patient, #audit-consult, #audit-actor, #audit-since,
// #audit-until, #audit-search), #audit-patient-error, #audit-rows of
// tr.audit-entry[data-seq][data-event][data-actor][data-consult-id], #audit-count,
// #audit-empty, #audit-more, #audit-export-jsonl, #audit-export-fhir,
// #audit-export-status.
// Hook: adds `audit` ({status, entries: [{seq, event, actor, consult_id, patient_ref}]}).

import { startPage } from './app.js';
import { setText } from './i18n.js';
import { request, refusalOf, ApiError } from './api.js';
import { getToken } from './auth.js';
import { registerHookSource } from './hook.js';
import { h, showError, clearError, timeEl, ltr } from './ui.js';

const PATIENT_REF_RE = /^[A-Za-z0-9._-]{1,64}$/;
const el = (id) => document.getElementById(id);
let entries = [];
let next = null;
let status = 'idle'; // idle | loading | ok | error
let latestSearch = 0; // a slower earlier answer must not replace a newer query's results

function epoch(value, endOfDay) {
  if (!value) return null;
  const d = new Date(`${value}T00:00:00`);
  if (Number.isNaN(d.getTime())) return null;
  return d.getTime() / 1000 + (endOfDay ? 86400 : 0);
}

/** The query of the form (null when a field is not valid). */
function query() {
  const params = new URLSearchParams();
  const patient = el('audit-patient').value.trim();
  const patientError = el('audit-patient-error');
  if (patient && !PATIENT_REF_RE.test(patient)) {
    setText(patientError, 'audit.badPatient');
    patientError.hidden = false;
    el('audit-patient').setAttribute('aria-invalid', 'true');
    return null;
  }
  patientError.hidden = true;
  el('audit-patient').removeAttribute('aria-invalid');
  if (patient) params.set('patient', patient);
  const consult = el('audit-consult').value.trim();
  if (consult) params.set('consult', consult);
  const actor = el('audit-actor').value.trim();
  if (actor) params.set('actor', actor);
  const since = epoch(el('audit-since').value, false);
  if (since !== null) params.set('since', String(since));
  const until = epoch(el('audit-until').value, true);
  if (until !== null) params.set('until', String(until));
  return params;
}

function row(e) {
  const actor = e.actor || {};
  return h('tr.audit-entry', { dataset: { seq: e.seq, event: e.event, actor: actor.sub || '', consultId: e.consult_id || '' } },
    h('td', {}, timeEl(e.at, { withDate: true })),
    h('td', {}, h('code', { text: e.event })),
    h('td', {}, h('span', { text: actor.name || actor.sub || '—', attrs: { dir: 'auto' } })),
    h('td', {}, ltr(e.consult_id || '—')),
    h('td', {}, ltr(e.patient_ref || '—')));
}

function render() {
  el('audit-rows').replaceChildren(...entries.map(row));
  setText(el('audit-count'), 'audit.count', { n: entries.length });
  el('audit-empty').hidden = !(status === 'ok' && !entries.length);
  el('audit-more').hidden = next === null;
}

async function search(more = false) {
  const params = query();
  if (!params) return;
  if (more && next !== null) params.set('after', String(next));
  const mine = ++latestSearch;
  status = 'loading';
  try {
    const data = await request('GET', `/api/audit?${params}`);
    if (mine !== latestSearch) return;
    entries = more ? entries.concat(data.entries || []) : (data.entries || []);
    next = data.next ?? null;
    status = 'ok';
    clearError();
  } catch (err) {
    if (mine !== latestSearch) return;
    status = 'error';
    showError(err);
  }
  render();
}

async function exportTrail(format) {
  const params = query();
  if (!params) return;
  params.set('format', format);
  const headers = {};
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const res = await fetch(`/api/audit/export?${params}`, { headers, cache: 'no-store' });
    const blob = await res.blob();
    if (!res.ok) {
      let body = null;
      try { body = JSON.parse(await blob.text()); } catch { body = null; }
      throw refusalOf(res.status, body) || new ApiError('http_server', `HTTP ${res.status}`, res.status);
    }
    const url = URL.createObjectURL(blob);
    const a = h('a', { attrs: { href: url, download: `audit.${format === 'fhir' ? 'fhir.ndjson' : 'jsonl'}`, hidden: true } });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30000);
    setText(el('audit-export-status'), 'audit.exported', { n: blob.size });
  } catch (err) {
    showError(err);
  }
}

startPage({
  page: 'audit',
  roles: ['admin'],
  init: async () => {
    el('audit-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      search(false);
    });
    el('audit-more').addEventListener('click', () => search(true));
    el('audit-export-jsonl').addEventListener('click', () => exportTrail('jsonl'));
    el('audit-export-fhir').addEventListener('click', () => exportTrail('fhir'));
    registerHookSource('audit', () => ({
      audit: {
        status,
        entries: entries.map((e) => ({ seq: e.seq, event: e.event, actor: e.actor ? e.actor.sub : null, consult_id: e.consult_id, patient_ref: e.patient_ref })),
      },
    }));
    await search(false);
  },
}).catch((err) => {
  console.error('audit page failed to start', err && err.message);
  showError({ code: 'startup', message: err && err.message });
});
