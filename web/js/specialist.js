// Specialist page: the live queue of the specialist's specialties (critical → urgent →
// routine, oldest first), Accept, and the session once accepted.
//
// Element ids / selectors for tests (see also app.js and sessionlayout.js):
//   #queue                              ul of li.consult-item[data-consult-id][data-state][data-urgency]
//                                       (waiting consults, in queue order)
//   .accept-button[data-consult-id]     accept this consult (then the page joins its session)
//   li.consult-item.taken               a consult someone else accepted (kept ~6 s, then removed)
//   .taken-notice                       "Accepted by another specialist" inside that item
//   #queue-count, #queue-empty, #my-specialties
//   #mine-section, #my-consults         consults this specialist accepted that are still open
//   .join-button[data-session-id][data-consult-id]   rejoin one of those sessions
//   Session view: #session-view, #local-video, #remote-video, #roster, #leave, #end-session,
//   #end-session-confirm, #connection-state, #observer-notice, #session-ended, #session-back
//   Shared: #error-banner[data-code] (already_accepted shows here too), #notice, #ws-state,
//   #lang-toggle, #signin-*
//   Recording in the session view: #record-request, #recording-indicator[data-state],
//   #recording-consent, #recording-consent-yes, #recording-consent-no, #record-stop,
//   #recording-withdraw (see sessionrecording.js)
//   #recordings-section ("My recordings", hidden until there is one): see recordings.js
//   Triage (triage.js, presence.js): #presence-bar, #presence (#presence-available,
//   #presence-busy, #presence-off), #presence-status, #alert-sound, #queue-paused; in queue items
//   .decline-button / .transfer-button[data-consult-id], li.reannounced / li.escalated,
//   .triage-flag; #decline-dialog (#decline-reason, #decline-confirm), #transfer-dialog
//   (#transfer-specialty, #transfer-reason, #transfer-confirm)
//   Session panels (sessionpanels.js): #attachments li.attachment-item[data-attachment-id]
//   .open-attachment, #attachment-viewer (attachmentviewer.js), #chat (chat.js), #report-form
//   (#report-findings, #report-assessment, #report-recommendation, #report-follow-up,
//   #report-submit; reportform.js)
//   Hook: await window.jisr.state()  (see hook.js); adds `consults`, `queue` (entries in
//   order: {id, state, urgency, specialty, reannounced, escalated, offeredToMe, declines,
//   transfers, attachments, shownAt}), `queueIds`, `presence`, `sound`, `dialog`,
//   `attachments`, `viewer`, `chat`, `reportForm`, `recording` (session), `recordings`, `player`.

import { startPage } from './app.js';
import { setupPastConsults } from './pastconsults.js';
import { t, setText, onLangChange } from './i18n.js';
import { api } from './api.js';
import { startTimeline, mark } from './timeline.js';
import { registerHookSource } from './hook.js';
import { setupRecordings } from './recordings.js';
import * as triage from './triage.js';
import { setupSessionPanels } from './sessionpanels.js';
import { h, showError, clearError, showNotice, announce, consultCard, sortQueue, specialtyLabel, rememberFocus } from './ui.js';

const STATE_RANK = { waiting: 0, accepted: 1, live: 2, ended: 3, cancelled: 3, expired: 3 };
const TAKEN_SHOW_MS = 6000;

const consults = new Map();
const taken = new Map(); // consult id -> time it was seen taken by someone else
const accepting = new Set();
let ctx = null;
let baseTitle = '';

function merge(c) {
  if (!c || !c.id) return null;
  const old = consults.get(c.id);
  if (old && (STATE_RANK[old.state] ?? 0) > (STATE_RANK[c.state] ?? 0)) return old;
  // A consult someone else took arrives as a stub (id, state, specialty, urgency…):
  // keep what was known of it for the "taken" card.
  const merged = old ? { ...old, ...c } : c;
  consults.set(c.id, merged);
  return merged;
}

function mine(c) {
  return c.specialist && c.specialist.sub === ctx.me.sub;
}

function markTaken(c) {
  if (!taken.has(c.id)) {
    taken.set(c.id, Date.now());
    setTimeout(() => {
      taken.delete(c.id);
      if (!mine(consults.get(c.id) || c)) consults.delete(c.id);
      render();
    }, TAKEN_SHOW_MS);
  }
}

async function accept(c, button) {
  if (accepting.has(c.id)) return;
  accepting.add(c.id);
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  setText(button, 'specialist.accepting');
  // The camera starts while the accept is in flight (the first picture comes sooner).
  startTimeline('accept.click');
  ctx.session.prepare();
  try {
    const res = await api.acceptConsult(c.id);
    mark('accept.answered');
    clearError();
    const consult = merge(res.consult) || res.consult;
    const session = res.session || {};
    const sessionId = session.id || (consult && consult.session_id);
    render();
    if (sessionId) await ctx.joinSession(sessionId, consult);
  } catch (err) {
    if (!ctx.session.active) ctx.session.unprepare();
    showError(err);
    if (err.code === 'already_accepted') {
      const cur = consults.get(c.id) || c;
      consults.set(c.id, { ...cur, state: cur.state === 'waiting' ? 'accepted' : cur.state });
      markTaken(c);
    } else if (err.code === 'invalid_state' || err.code === 'consult_not_found') {
      consults.delete(c.id);
    }
    render();
    refresh();
  } finally {
    accepting.delete(c.id);
  }
}

function queueItem(c) {
  const isTaken = taken.has(c.id) && c.state !== 'waiting';
  const actions = [];
  if (!isTaken) {
    const btn = h('button.btn.btn-accept.btn-large.accept-button', {
      attrs: { type: 'button' },
      dataset: { consultId: c.id },
      i18n: [accepting.has(c.id) ? 'specialist.accepting' : 'specialist.accept'],
    });
    if (accepting.has(c.id)) btn.disabled = true;
    btn.addEventListener('click', () => accept(c, btn));
    actions.push(btn, ...triage.queueActions(c));
  }
  const extra = isTaken ? h('p.taken-notice', { attrs: { role: 'status' }, i18n: [c.specialist && !mine(c) ? 'specialist.takenBy' : 'specialist.taken', { name: c.specialist ? c.specialist.name || c.specialist.sub : '' }] }) : null;
  const li = consultCard(c, { actions, extra });
  if (isTaken) li.classList.add('taken');
  return triage.decorate(li, c);
}

/** The queue (waiting consults, and those just taken by someone else); returns its counts. */
function renderQueue(all) {
  const queueEl = document.getElementById('queue');
  const focus = rememberFocus(queueEl);
  const waiting = all.filter((c) => (c.state === 'waiting' && triage.showsInQueue(c)) || taken.has(c.id));
  const queue = sortQueue(waiting);
  queueEl.replaceChildren(...queue.map(queueItem));
  const waitingOnly = queue.filter((c) => c.state === 'waiting');
  const critical = waitingOnly.filter((c) => c.urgency === 'critical').length;
  document.getElementById('queue-empty').hidden = queue.length > 0 || triage.queuePaused();
  setText(document.getElementById('queue-count'), critical ? 'specialist.countWithCritical' : 'specialist.count', { n: waitingOnly.length, critical });
  document.getElementById('queue-count').classList.toggle('has-critical', critical > 0);
  focus();
  return { waiting: waitingOnly.length, critical };
}

/** "My consults": accepted and still open, each with a way back into its session. */
function renderMine(all) {
  const mineList = all.filter((c) => mine(c) && (c.state === 'accepted' || c.state === 'live'));
  const mineEl = document.getElementById('my-consults');
  mineEl.replaceChildren(...mineList.map((c) => {
    const actions = [];
    if (c.session_id && !(ctx.session.active && ctx.session.sessionId === c.session_id)) {
      actions.push(h('button.btn.btn-primary.btn-large.join-button', {
        attrs: { type: 'button' },
        dataset: { sessionId: c.session_id, consultId: c.id },
        i18n: ['specialist.join'],
        on: { click: () => ctx.joinSession(c.session_id, c).catch(showError) },
      }));
    }
    return consultCard(c, { actions });
  }));
  document.getElementById('mine-section').hidden = mineList.length === 0;
}

function render() {
  const all = Array.from(consults.values());
  const counts = renderQueue(all);
  renderMine(all);
  updateTitle(counts.waiting, counts.critical);
}

function updateTitle(n, critical) {
  baseTitle = t('specialist.pageTitle');
  let prefix = '';
  if (critical) prefix = `(${t('specialist.titleCritical', { n: critical })}) `;
  else if (n) prefix = `(${n}) `;
  document.title = prefix + baseTitle;
}

async function refresh() {
  try {
    const data = await api.listConsults();
    const fresh = (data && data.consults) || [];
    const ids = new Set(fresh.map((c) => c.id));
    // The server's list is the truth for waiting consults; keep ones shown as taken.
    for (const [id, c] of consults) if (!ids.has(id) && c.state === 'waiting' && !taken.has(id)) consults.delete(id);
    for (const c of fresh) {
      const old = consults.get(c.id);
      if (old && old.state !== 'waiting' && c.state === 'waiting') consults.set(c.id, c);
      else merge(c);
    }
    render();
  } catch (err) {
    showError(err);
  }
}

function onUpdate(c) {
  const known = consults.has(c.id);
  const before = consults.get(c.id);
  const merged = merge(c);
  if (!merged) return;
  const id = merged.id;
  if (merged.state === 'waiting' || mine(merged)) {
    // in the queue, or in "my consults"
  } else if ((merged.state === 'accepted' || merged.state === 'live') && before && before.state === 'waiting') {
    // Someone else took it: keep it visible for a moment so nobody wonders where it went.
    if (!accepting.has(id)) markTaken(merged);
  } else if (!taken.has(id)) {
    consults.delete(id);
  }
  render();
  if (!known && merged.state === 'waiting') {
    const item = document.querySelector(`#queue .consult-item[data-consult-id="${CSS.escape(merged.id)}"]`);
    if (item) item.classList.add('new-arrival');
    triage.arrived(merged);
    const key = merged.urgency === 'critical' ? 'specialist.newCritical' : 'specialist.newConsult';
    showNotice(key, { specialty: specialtyLabel(merged.specialty) });
    announce(key, { specialty: specialtyLabel(merged.specialty) }, { assertive: merged.urgency === 'critical' });
  }
}

function renderSpecialties(specs) {
  if (!specs.length) return;
  const parts = specs.map((s) => {
    const l = specialtyLabel(s);
    return typeof l === 'string' ? l : t(l.t);
  });
  setText(document.getElementById('my-specialties'), 'specialist.specialties', { list: parts.join(t('list.separator')) });
}

function registerPageHook() {
  registerHookSource('page', () => {
    const q = sortQueue(Array.from(consults.values()).filter((x) => x.state === 'waiting' && triage.showsInQueue(x)));
    return {
      consults: Array.from(consults.values()).map((x) => ({
        id: x.id, state: x.state, urgency: x.urgency, specialty: x.specialty, session_id: x.session_id || null,
        taken: taken.has(x.id),
      })),
      queue: q.map(triage.queueEntry),
      queueIds: q.map((x) => x.id),
    };
  });
}

startPage({
  page: 'specialist',
  roles: ['specialist'],
  init: async (c) => {
    ctx = c;
    const specs = (ctx.me.specialties || []);
    renderSpecialties(specs);
    onLangChange(() => {
      renderSpecialties(specs);
      render();
    });
    ctx.sig.addEventListener('consult.updated', (e) => onUpdate(e.detail.consult));
    ctx.sig.addEventListener('consult.reannounced', (e) => onUpdate(e.detail.consult));
    ctx.sig.addEventListener('consult.escalated', (e) => onUpdate(e.detail.consult));
    triage.setupTriage(ctx, {
      render: () => render(),
      refresh: () => refresh(),
      get: (id) => consults.get(id) || null,
      remove: (id) => {
        consults.delete(id);
        render();
      },
    });
    setupSessionPanels(ctx);
    ctx.sig.addEventListener('ready', () => refresh());
    const library = setupRecordings(ctx, { hideWhenEmpty: true });
    setupPastConsults();
    ctx.onSessionExit = () => {
      render();
      refresh();
      library.refreshSoon(0);
    };
    registerPageHook();
    await Promise.all([refresh(), library.refresh()]);
  },
}).catch((err) => {
  console.error('specialist page failed to start', err && err.message);
  showError({ code: 'startup', message: err && err.message });
});
