// Supervisor page: live sessions (GET /api/sessions, refreshed on consult.updated pushes)
// with Observe, and the waiting consults of every queue (read-only). Observing joins the
// session receive-only and shows both participants.
//
// Element ids / selectors for tests (see also app.js and sessionlayout.js):
//   #session-list                       ul of li.session-item[data-session-id][data-state]
//   .observe-button[data-session-id]    observe this session
//   #session-count, #sessions-empty, #refresh-sessions
//   #waiting-list                       li.consult-item[data-consult-id] (waiting consults)
//   #waiting-summary, #waiting-empty
//   Recordings (recordings.js, recordingplayer.js): #recordings-section, #recording-list of
//   li.recording-item[data-recording-id][data-state], .play-recording[data-recording-id],
//   #refresh-recordings, #recording-count, #recordings-empty, #recordings-unavailable,
//   #recording-player-box, #recording-tiles of figure.player-tile[data-participant] (one
//   <video> per participant, blob: URLs; the leading one is <video id="recording-player"
//   controls>), #recording-player-title, #recording-player-status, #recording-player-close
//   Session view (observer): #session-view[data-as=observer], #remote-video-referrer,
//   #remote-video-specialist, #remote-waiting-referrer, #remote-waiting-specialist,
//   #roster, #leave, #connection-state, #observer-notice, #session-ended, #session-back
//   Shared: #error-banner, #notice, #ws-state, #lang-toggle, #signin-*
//   Session view while observing: #recording-indicator[data-state] (no recording controls)
//   Dashboard (dashboard.js): #dashboard, #dashboard-queue .queue-tile[data-urgency],
//   #escalations li.escalation-item[data-consult-id], #live-consults, #on-call, #mean-accept,
//   #escalation-alert (#escalation-alert-show, #escalation-alert-dismiss), #alert-sound
//   Session panels while observing (sessionpanels.js): #session-attachments, #chat
//   Hook: await window.jisr.state()  (see hook.js); adds `sessions`, `consults`,
//   `escalations`, `escalationAlert`, `dashboard`, `attachments`, `viewer`, `chat`,
//   `recordings` (ids), `recordingList`, `recordingsStatus` and `player`.

import { startPage } from './app.js';
import { setupPastConsults } from './pastconsults.js';
import { setText } from './i18n.js';
import { api } from './api.js';
import { registerHookSource } from './hook.js';
import { setupRecordings } from './recordings.js';
import { setupDashboard } from './dashboard.js';
import { setupSessionPanels } from './sessionpanels.js';
import {
  h, showError, consultCard, sortQueue, urgencyBadge, specialtyEl, stateBadge, ltr, timeEl,
  waitingEl, rememberFocus, announce, specialtyLabel,
} from './ui.js';

let ctx = null;
let sessions = [];
const consults = new Map();
let refreshTimer = null;
let refreshing = null;
let library = null;

function person(label, p) {
  return h('div.field', {},
    h('span.field-label', { i18n: [label] }),
    h('span.field-value', { text: p ? p.name || p.sub : '—', attrs: { dir: 'auto' } }));
}

function sessionCard(s) {
  const c = consults.get(s.consult_id) || null;
  const urgency = c ? c.urgency : null;
  const roster = Array.isArray(s.roster) ? s.roster : [];
  const observers = roster.filter((p) => p.as === 'observer');
  const li = h(`li.session-item.card${urgency ? `.urgency-${urgency}` : ''}`, { dataset: { sessionId: s.id, state: s.state, urgency: urgency || '' } });
  const head = h('div.card-head', {});
  if (urgency) head.append(urgencyBadge(urgency));
  head.append(specialtyEl(s.specialty || (c && c.specialty) || '', 'strong'), stateBadge(s.state, 'session'));
  if (s.created_at) head.append(h('span.waiting', {}, h('span.waiting-label', { i18n: ['supervisor.duration'] }), ' ', waitingEl(s.created_at)));
  li.append(head);
  if (c && c.summary) li.append(h('p.summary', { text: c.summary, attrs: { dir: 'auto' } }));
  const meta = h('div.card-meta', {},
    person('roles.referrer', s.referrer),
    person('roles.specialist', s.specialist),
    h('div.field', {}, h('span.field-label', { i18n: ['consult.facility'] }), h('span.field-value', {}, ltr(s.facility || (c && c.facility) || '—'))));
  if (c && c.patient_ref) meta.append(h('div.field', {}, h('span.field-label', { i18n: ['consult.patientRef'] }), h('span.field-value', {}, ltr(c.patient_ref))));
  if (s.created_at) meta.append(h('div.field', {}, h('span.field-label', { i18n: ['supervisor.started'] }), h('span.field-value', {}, timeEl(s.created_at))));
  meta.append(h('div.field', {}, h('span.field-label', { i18n: ['supervisor.observers'] }),
    h('span.field-value.observer-count', { text: String(observers.length) })));
  li.append(meta);
  const observing = ctx.session.active && ctx.session.sessionId === s.id;
  const btn = h('button.btn.btn-primary.btn-large.observe-button', {
    attrs: { type: 'button', disabled: observing || s.state === 'ended' },
    dataset: { sessionId: s.id },
    i18n: ['supervisor.observe'],
    on: { click: () => ctx.joinSession(s.id, c || sessionAsConsult(s)).catch(showError) },
  });
  li.append(h('div.card-actions', {}, btn));
  return li;
}

/** Enough of a consult for the session view's header when the consult is not listed. */
function sessionAsConsult(s) {
  return { id: s.consult_id, specialty: s.specialty, facility: s.facility, referrer: s.referrer, specialist: s.specialist, created_at: s.created_at };
}

function render() {
  const list = document.getElementById('session-list');
  const focus = rememberFocus(list);
  const rank = { critical: 0, urgent: 1, routine: 2 };
  const ordered = sessions.slice().sort((a, b) => {
    const ua = rank[(consults.get(a.consult_id) || {}).urgency] ?? 3;
    const ub = rank[(consults.get(b.consult_id) || {}).urgency] ?? 3;
    return ua - ub || (a.created_at || 0) - (b.created_at || 0);
  });
  list.replaceChildren(...ordered.map(sessionCard));
  document.getElementById('sessions-empty').hidden = sessions.length > 0;
  setText(document.getElementById('session-count'), 'supervisor.sessionCount', { n: sessions.length });
  focus();

  const waiting = sortQueue(Array.from(consults.values()).filter((c) => c.state === 'waiting'));
  document.getElementById('waiting-list').replaceChildren(...waiting.map((c) => {
    const li = consultCard(c);
    if (c.escalated_at) li.classList.add('escalated'); // triage.css
    return li;
  }));
  document.getElementById('waiting-empty').hidden = waiting.length > 0;
  const n = (u) => waiting.filter((c) => c.urgency === u).length;
  setText(document.getElementById('waiting-summary'), 'supervisor.waitingSummary', {
    n: waiting.length, critical: n('critical'), urgent: n('urgent'), routine: n('routine'),
  });
  document.getElementById('waiting-summary').classList.toggle('has-critical', n('critical') > 0);
}

async function refresh() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    try {
      const [s, c] = await Promise.all([api.listSessions(), api.listConsults()]);
      sessions = (s && s.sessions) || [];
      consults.clear();
      for (const x of (c && c.consults) || []) consults.set(x.id, x);
      render();
    } catch (err) {
      showError(err);
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 300);
}

startPage({
  page: 'supervisor',
  roles: ['supervisor', 'admin'],
  init: async (c) => {
    ctx = c;
    ctx.sig.addEventListener('consult.updated', (e) => {
      const x = e.detail.consult;
      if (x && x.id) {
        if (x.state === 'waiting' && x.urgency === 'critical' && !consults.has(x.id)) {
          announce('supervisor.newCritical', { specialty: specialtyLabel(x.specialty) }, { assertive: true });
        }
        if (['waiting', 'accepted', 'live'].includes(x.state)) consults.set(x.id, x);
        else consults.delete(x.id);
        render();
      }
      refreshSoon();
    });
    ctx.sig.addEventListener('session.ended', () => refreshSoon());
    ctx.sig.addEventListener('ready', () => refresh());
    document.getElementById('refresh-sessions').addEventListener('click', () => refresh());
    setInterval(() => { if (document.visibilityState === 'visible') refresh(); }, 15000);
    library = setupRecordings(ctx, { pollMs: 30000 });
    setupPastConsults();
    document.getElementById('audit-link').hidden = ctx.me.role !== 'admin';
    setupDashboard(ctx);
    setupSessionPanels(ctx);
    ctx.onSessionExit = () => {
      render();
      refresh();
      library.refreshSoon(0);
    };
    registerHookSource('page', () => ({
      sessions: sessions.map((s) => ({ id: s.id, state: s.state, consult_id: s.consult_id })),
      consults: Array.from(consults.values()).map((x) => ({ id: x.id, state: x.state, urgency: x.urgency, specialty: x.specialty, session_id: x.session_id || null })),
    }));
    await Promise.all([refresh(), library.refresh()]);
  },
}).catch((err) => {
  console.error('supervisor page failed to start', err && err.message);
  showError({ code: 'startup', message: err && err.message });
});
