// The referrer's consult cards beyond their state: the place in the specialty's queue
// and the live triage status of a waiting consult, declines and transfers, the case
// files (attach, list, view) and, once written, the specialist's report.
//
// Positions come only with GET /api/consults (pushed consults carry none, and nothing is
// pushed when another facility's consult moves ahead), so the list is re-read shortly
// after every push and every 10 s while a consult of this facility is waiting.
//
// Elements inside li.consult-item (referrer.js renders the card; these are added):
//   .queue-status[data-position]      "Position 1 in the Cardiology queue"
//   .triage-status[data-status=waiting|reannounced|escalated]
//   ul.triage-history > li.transfer-entry / li.decline-entry
//                                     "Transferred from Cardiology to Neurology by …: reason"
//   .attach-button[data-consult-id], #attach-input, .upload-status (casepacket.js)
//   ul.attachment-list > li.attachment-item[data-attachment-id], .open-attachment
//   section.report-view[data-consult-id] with .report-download[data-consult-id] (report.js)
// Hook (registered as 'report'): report {consultId, findings, assessment, recommendation,
//   follow_up_urgency, sha256, written_at, specialist, shown} (the latest received) | null,
//   reports [same, newest first], positions {consultId: n}, reportDownloads.

import { api } from './api.js';
import { registerHookSource } from './hook.js';
import { attachmentList, attachButton, uploadStatus, packetEvents } from './casepacket.js';
import { reportView, downloads } from './report.js';
import { h, specialtyLabel, timeEl } from './ui.js';

const POLL_MS = 10000;
const positions = new Map(); // consult id -> {position, specialty}
let hooks = { getConsults: () => [], merge: () => {}, render: () => {} };
let refreshTimer = null;
let polling = null;

function signature() {
  return JSON.stringify(hooks.getConsults().map((c) => [c.id, c.state, c.position ?? null, c.specialty,
    c.reannounced_at || null, c.escalated_at || null, (c.declines || []).length, (c.transfers || []).length,
    (c.attachments || []).length, c.report_sha256 || null]).sort());
}

/** Re-read the list for positions; re-render only when something changed (a list that
 *  redraws under the pointer loses clicks). */
function poll() {
  if (polling) return polling;
  polling = (async () => {
    try {
      const data = await api.listConsults();
      const before = signature();
      for (const c of (data && data.consults) || []) hooks.merge(c);
      if (signature() !== before) hooks.render();
    } catch { /* the next poll or push tries again; the page shows its own errors */ }
    polling = null;
  })();
  return polling;
}

function refreshSoon(ms = 400) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(poll, ms);
}

function anyWaiting() {
  return hooks.getConsults().some((c) => c.state === 'waiting');
}

/** The consult's place in its specialty's queue (1 = next), or null if not known. */
export function positionOf(c) {
  if (c.state !== 'waiting') {
    positions.delete(c.id);
    return null;
  }
  if (Object.prototype.hasOwnProperty.call(c, 'position')) {
    if (c.position) positions.set(c.id, { position: c.position, specialty: c.specialty });
    else positions.delete(c.id);
  }
  const known = positions.get(c.id);
  // A transfer changes the queue: an old position in the old queue means nothing.
  return known && known.specialty === c.specialty ? known.position : null;
}

function historyList(c) {
  const items = [];
  for (const tr of c.transfers || []) {
    items.push(h('li.transfer-entry', {}, h('span', { i18n: [tr.reason ? 'triage.transferredWhy' : 'triage.transferred', {
      from: specialtyLabel(tr.from), to: specialtyLabel(tr.to), name: tr.name || tr.sub || '', reason: tr.reason || '',
    }] }), tr.at ? ' ' : null, tr.at ? timeEl(tr.at) : null));
  }
  for (const d of c.declines || []) {
    items.push(h('li.decline-entry', {}, h('span', { i18n: [d.reason ? 'triage.declinedWhy' : 'triage.declined', {
      name: d.name || d.sub || '', reason: d.reason || '',
    }] }), d.at ? ' ' : null, d.at ? timeEl(d.at) : null));
  }
  if (!items.length) return null;
  return h('ul.triage-history', {}, ...items);
}

function waitingStatus(c) {
  const parts = [];
  const position = positionOf(c);
  if (position) {
    parts.push(h('p.queue-status', { dataset: { position }, i18n: ['triage.position', { n: position, specialty: specialtyLabel(c.specialty) }] }));
  }
  let status = 'waiting';
  let line;
  if (c.escalated_at) {
    status = 'escalated';
    line = h('p.triage-status.status-escalated', {}, h('span', { i18n: ['triage.statusEscalated'] }), ' ', timeEl(c.escalated_at));
  } else if (c.reannounced_at) {
    status = 'reannounced';
    line = h('p.triage-status.status-reannounced', {}, h('span', { i18n: ['triage.statusReannounced'] }), ' ', timeEl(c.reannounced_at));
  } else {
    line = h('p.triage-status', { i18n: ['referrer.statusWaiting'] });
  }
  line.dataset.status = status;
  parts.push(line);
  return parts;
}

/**
 * What referrer.js puts in a card's `extra`: triage status (waiting), history, case files,
 * report. `statusLine` is the page's own line (accepted by …), kept for other states.
 */
export function caseExtras(c, statusLine = null) {
  const parts = [];
  if (c.state === 'waiting') parts.push(...waitingStatus(c));
  else if (statusLine) parts.push(statusLine);
  const history = historyList(c);
  if (history) parts.push(history);
  const files = attachmentList(c);
  if (files) parts.push(h('div.card-attachments', {}, h('h3.attachments-title', { i18n: ['casepacket.title'] }), files));
  if (['waiting', 'accepted', 'live'].includes(c.state)) {
    const status = uploadStatus(c, { help: true });
    if (status) parts.push(status);
  }
  const report = reportView(c);
  if (report) parts.push(report);
  else if (c.state === 'ended') parts.push(h('p.status-line.report-none', { i18n: ['report.none'] }));
  if (!parts.length) return null;
  return h('div.case-extras', {}, ...parts);
}

/** Card actions added by this module (attach files while the consult is open). */
export function caseActions(c) {
  if (!['waiting', 'accepted', 'live'].includes(c.state)) return [];
  return [attachButton(c)];
}

function reportEntry(c) {
  const r = c.report;
  const el = document.querySelector(`.report-view[data-consult-id="${CSS.escape(c.id)}"]`);
  const shown = Array.from(document.querySelectorAll(`.report-view[data-consult-id="${CSS.escape(c.id)}"]`))
    .some((x) => x.offsetParent !== null);
  return {
    consultId: c.id,
    state: c.state,
    findings: r.findings,
    assessment: r.assessment,
    recommendation: r.recommendation,
    follow_up_urgency: r.follow_up_urgency,
    written_at: r.written_at || null,
    specialist: r.specialist || null,
    sha256: c.report_sha256 || null,
    inPage: !!el,
    shown,
  };
}

/**
 * @param {object} ctx startPage's context
 * @param {object} o
 * @param {Function} o.getConsults  () -> the consults the page knows
 * @param {Function} o.merge        (consult) -> take a consult from GET /api/consults in
 * @param {Function} o.render       re-render the list
 */
export function setupReferrerCase(ctx, o) {
  hooks = { ...hooks, ...o };
  ctx.sig.addEventListener('consult.updated', () => { if (anyWaiting()) refreshSoon(); });
  setInterval(() => { if (anyWaiting()) poll(); }, POLL_MS);
  packetEvents.addEventListener('change', () => hooks.render());
  registerHookSource('report', () => {
    const withReport = hooks.getConsults().filter((c) => c.report)
      .sort((a, b) => (b.report.written_at || 0) - (a.report.written_at || 0));
    const reports = withReport.map(reportEntry);
    return {
      report: reports[0] || null,
      reports,
      positions: Object.fromEntries(Array.from(positions.entries()).map(([id, p]) => [id, p.position])),
      reportDownloads: Object.fromEntries(downloads.entries()),
    };
  });
}
