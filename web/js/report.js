// The consult report: the accepting specialist writes it at the end of the session
// (reportform.js); it closes the consult (state ended, `report`, `report_sha256`) and
// ends the session for everyone. The referring team sees it on the consult and can
// download it as JSON (GET /api/consults/{id}/report, with the bearer header).
//
// View (everyone who sees the consult): section.report-view[data-consult-id][data-follow-up]
//   with .report-field[data-field], .report-hash, .report-download[data-consult-id]
//   ("Download report (JSON)"), .report-download-status.

import { setText, has } from './i18n.js';
import { ApiError, refusalOf } from './api.js';
import { getToken } from './auth.js';
import { h, showError, timeEl, urgencyBadge, ltr } from './ui.js';

// The written fields of a report, in the order shown (follow_up_urgency comes after).
export const REPORT_FIELDS = ['findings', 'assessment', 'recommendation'];
export const downloads = new Map(); // consult id -> {state: 'loading'|'ok'|'error', bytes, code}

function followUpEl(value) {
  if (value === 'none') return h('span.badge.follow-up-none', { i18n: ['report.followUp.none'] });
  return h('span.follow-up', {}, urgencyBadge(value), ' ', h('span', { i18n: [`report.followUpWithin.${value}`] }));
}

/** The report as the server sends it (GET, bearer header); ApiError when refused. */
async function fetchReport(consultId) {
  const headers = { Accept: 'application/json' };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(`/api/consults/${encodeURIComponent(consultId)}/report`, { headers, cache: 'no-store' });
  } catch (e) {
    throw new ApiError('network', String(e && e.message ? e.message : e), 0);
  }
  const text = await res.text();
  let data = null;
  try { data = JSON.parse(text); } catch { data = null; }
  const refusal = refusalOf(res.status, data);
  if (refusal) throw refusal;
  return data;
}

/** Save data as a pretty-printed JSON file through a blob: URL; returns its size. */
function saveJson(data, filename) {
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' });
  const url = URL.createObjectURL(blob);
  const a = h('a', { attrs: { href: url, download: filename, hidden: true } });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
  return blob.size;
}

/** GET the report as JSON with the bearer header and save it as a file. */
export async function downloadReport(consultId, statusEl = null) {
  downloads.set(consultId, { state: 'loading', bytes: 0, code: null });
  if (statusEl) setText(statusEl, 'report.downloading');
  try {
    const data = await fetchReport(consultId);
    const bytes = saveJson(data, `consult-${consultId}.json`);
    downloads.set(consultId, { state: 'ok', bytes, code: null, sha256: data && data.sha256 });
    if (statusEl) setText(statusEl, 'report.downloaded');
  } catch (err) {
    downloads.set(consultId, { state: 'error', bytes: 0, code: err.code });
    if (statusEl) setText(statusEl, has(`errors.${err.code}`) ? `errors.${err.code}` : 'report.downloadFailed');
    else showError(err);
  }
}

/** The report of a consult, read-only (null when it has none). */
export function reportView(c, { download = true, heading = 'h3' } = {}) {
  const r = c && c.report;
  if (!r) return null;
  const by = r.specialist || c.specialist || {};
  const section = h('section.report-view', { dataset: { consultId: c.id, followUp: r.follow_up_urgency || '' } },
    h(`${heading}.report-title`, { i18n: ['report.title'] }),
    h('p.report-by', {}, h('span', { i18n: ['report.writtenBy', { name: by.name || by.sub || '' }] }), ' ', r.written_at ? timeEl(r.written_at, { withDate: true }) : ''));
  const dl = h('dl.report-fields');
  for (const f of REPORT_FIELDS) {
    dl.append(h('dt', { i18n: [`report.fields.${f}`] }), h('dd.report-field', { dataset: { field: f }, text: r[f] || '', attrs: { dir: 'auto' } }));
  }
  dl.append(h('dt', { i18n: ['report.fields.follow_up_urgency'] }), h('dd.report-field', { dataset: { field: 'follow_up_urgency' } }, followUpEl(r.follow_up_urgency)));
  section.append(dl);
  if (c.report_sha256) {
    section.append(h('p.report-hash', {}, h('span.field-label', { i18n: ['report.hash'] }), ltr(`${c.report_sha256.slice(0, 16)}…`)));
  }
  if (download) {
    const status = h('span.report-download-status', { attrs: { role: 'status', 'aria-live': 'polite' } });
    const btn = h('button.btn.btn-secondary.report-download', {
      attrs: { type: 'button' }, dataset: { consultId: c.id }, i18n: ['report.download'],
      on: { click: async () => { btn.disabled = true; await downloadReport(c.id, status); btn.disabled = false; } },
    });
    section.append(h('div.report-actions', {}, btn, status));
  }
  return section;
}
