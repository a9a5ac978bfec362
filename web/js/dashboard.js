// Supervisor dashboard (GET /api/dashboard, every 5 s and shortly after every push):
// the queue by urgency with the oldest waiting time, escalated consults first and
// unmistakable, live consults, who is on call, mean time to accept. A `consult.escalated`
// push raises the escalation banner at once (with a short sound unless muted).
//
// Elements:
//   #escalation-alert[data-count] (role=alert; at the top of the page, also over a session
//     being observed): .escalation-alert-text, #escalation-alert-show, #escalation-alert-dismiss
//   #dashboard[data-state=loading|ok|error]
//     #dashboard-updated, #alert-sound (alertsound.js)
//     #dashboard-queue > .queue-tile[data-urgency][data-waiting] (.queue-count, .queue-oldest)
//     #escalations > li.escalation-item[data-consult-id][data-urgency] (#escalations-empty)
//     #live-consults > li.live-item[data-consult-id] (#live-empty)
//     #on-call > li.oncall-item[data-sub][data-status] (#on-call-empty, #on-call-summary)
//     #mean-accept > .mean-item[data-urgency]
// Hook (registered as 'dashboard'): escalations [{id, urgency, specialty, facility,
//   patient_ref, escalated_at, offered_to, waitingSince}], escalationAlert {shown, count,
//   consultIds}, dashboard {state, loadedAt, queue, live (count), onCall [{sub, status}],
//   meanAccept}.

import { setText, onLangChange, getLang } from './i18n.js';
import { request, serverNow } from './api.js';
import { registerHookSource } from './hook.js';
import { playAlert, soundToggle } from './alertsound.js';
import { h, showError, urgencyBadge, specialtyEl, specialtyLabel, stateBadge, ltr, timeEl, waitingEl, durationArgs, scrollBehavior } from './ui.js';

const POLL_MS = 5000;
const URGENCIES = ['critical', 'urgent', 'routine'];

let ctx = null;
let data = null;
let state = 'loading';
let loadedAt = null;
let fetchedAt = 0; // serverNow() when `data` was read
let loading = null;
let soonTimer = null;
const escalated = new Map(); // consult id -> consult (from the dashboard and from pushes)
const pushed = new Map(); // consult id -> {consult, at}: escalations heard by push
const alerting = []; // consult ids the banner is about, newest last
const el = {};

function person(p) {
  return h('span', { text: p ? p.name || p.sub : '—', attrs: { dir: 'auto' } });
}

function build() {
  const root = document.getElementById('dashboard');
  if (!root) return;
  el.root = root;
  el.updated = h('span#dashboard-updated.list-sub', { attrs: { 'aria-live': 'off' } });
  el.queue = h('div#dashboard-queue.queue-tiles', { attrs: { role: 'list' } });
  el.escalations = h('ul#escalations.escalation-list');
  el.escalationsEmpty = h('p#escalations-empty.empty', { i18n: ['dashboard.noEscalations'] });
  el.live = h('ul#live-consults.live-list');
  el.liveEmpty = h('p#live-empty.empty', { i18n: ['dashboard.noLive'] });
  el.onCall = h('ul#on-call.oncall-list');
  el.onCallEmpty = h('p#on-call-empty.empty', { i18n: ['dashboard.noOnCall'] });
  el.onCallSummary = h('span#on-call-summary.list-sub');
  el.mean = h('dl#mean-accept.mean-accept');
  root.replaceChildren(
    h('div.list-head', {},
      h('h1#dashboard-title', { i18n: ['dashboard.title'] }),
      el.updated,
      h('span.dashboard-tools', {}, soundToggle())),
    el.queue,
    h('section.dash-block.dash-escalations', { attrs: { 'aria-labelledby': 'escalations-title' } },
      h('h2#escalations-title', { i18n: ['dashboard.escalations'] }), el.escalations, el.escalationsEmpty),
    h('div.dashboard-grid', {},
      h('section.dash-block', { attrs: { 'aria-labelledby': 'live-title' } },
        h('h2#live-title', { i18n: ['dashboard.live'] }), el.live, el.liveEmpty),
      h('section.dash-block', { attrs: { 'aria-labelledby': 'oncall-title' } },
        h('div.dash-head', {}, h('h2#oncall-title', { i18n: ['dashboard.onCall'] }), el.onCallSummary), el.onCall, el.onCallEmpty),
      h('section.dash-block', { attrs: { 'aria-labelledby': 'mean-title' } },
        h('h2#mean-title', { i18n: ['dashboard.meanAccept'] }), el.mean)));

  const alert = document.getElementById('escalation-alert');
  if (alert) {
    el.alert = alert;
    el.alertText = h('p.escalation-alert-text');
    el.alertMore = h('p.escalation-alert-more');
    alert.replaceChildren(
      h('span.escalation-alert-icon', { text: '!', attrs: { 'aria-hidden': 'true' } }),
      h('div.escalation-alert-body', {}, el.alertText, el.alertMore),
      h('div.escalation-alert-actions', {},
        (el.alertShow = h('button#escalation-alert-show.btn.btn-secondary', { attrs: { type: 'button' }, i18n: ['dashboard.alertShow'], on: { click: showEscalations } })),
        h('button#escalation-alert-dismiss.btn.btn-ghost', { attrs: { type: 'button' }, i18n: ['dashboard.alertDismiss'], on: { click: dismissAlert } })));
  }
}

function showEscalations() {
  const id = alerting[alerting.length - 1];
  const item = id && document.querySelector(`#escalations .escalation-item[data-consult-id="${CSS.escape(id)}"]`);
  const target = item || document.getElementById('escalations');
  target.scrollIntoView({ behavior: scrollBehavior(), block: 'center' });
  if (item) {
    item.classList.add('pulse');
    item.focus({ preventScroll: true });
    setTimeout(() => item.classList.remove('pulse'), 3000);
  }
}

function dismissAlert() {
  alerting.length = 0;
  renderAlert();
}

function renderAlert() {
  if (!el.alert) return;
  // Only consults still waiting keep the banner up.
  for (let i = alerting.length - 1; i >= 0; i -= 1) if (!escalated.has(alerting[i])) alerting.splice(i, 1);
  el.alert.hidden = alerting.length === 0;
  // While observing a session the dashboard is not on screen: the banner says it all.
  if (el.alertShow) el.alertShow.hidden = !!(ctx && ctx.session && ctx.session.active);
  el.alert.dataset.count = String(alerting.length);
  if (!alerting.length) return;
  const c = escalated.get(alerting[alerting.length - 1]);
  const offered = (c.offered_to || []).join(', ');
  setText(el.alertText, offered ? 'dashboard.alertTextOffered' : 'dashboard.alertText', {
    urgency: { t: `urgency.${c.urgency}` },
    specialty: specialtyLabel(c.specialty),
    patient: c.patient_ref || '—',
    facility: c.facility || '—',
    offered,
  });
  el.alertMore.hidden = alerting.length < 2;
  if (alerting.length > 1) setText(el.alertMore, 'dashboard.alertMore', { n: alerting.length - 1 });
}

function queueTile(u) {
  const q = (data && data.queue && data.queue[u]) || { waiting: 0, oldest_s: 0 };
  const tile = h(`div.queue-tile.urgency-${u}`, { attrs: { role: 'listitem' }, dataset: { urgency: u, waiting: q.waiting } },
    urgencyBadge(u),
    h('span.queue-count', { text: String(q.waiting), attrs: { dir: 'ltr' } }),
    h('span.queue-count-label', { i18n: ['dashboard.waiting'] }));
  if (q.waiting) {
    tile.append(h('span.queue-oldest', {}, h('span.field-label', { i18n: ['dashboard.oldest'] }), waitingEl(fetchedAt - q.oldest_s)));
  } else tile.classList.add('empty-tile');
  return tile;
}

function escalationItem(c) {
  const li = h(`li.escalation-item.card.urgency-${c.urgency}`, { dataset: { consultId: c.id, urgency: c.urgency }, attrs: { tabindex: '-1' } },
    h('div.card-head', {},
      h('span.badge.triage-flag.flag-escalated', { i18n: ['dashboard.escalatedBadge'] }),
      urgencyBadge(c.urgency),
      specialtyEl(c.specialty, 'strong'),
      h('span.waiting', {}, h('span.waiting-label', { i18n: ['consult.waiting'] }), ' ', waitingEl(c.created_at))),
    h('p.summary', { text: c.summary || '', attrs: { dir: 'auto' } }),
    h('div.card-meta', {},
      h('div.field', {}, h('span.field-label', { i18n: ['consult.patientRef'] }), h('span.field-value', {}, ltr(c.patient_ref || '—'))),
      h('div.field', {}, h('span.field-label', { i18n: ['consult.facility'] }), h('span.field-value', {}, ltr(c.facility || '—'))),
      h('div.field', {}, h('span.field-label', { i18n: ['consult.referrer'] }), h('span.field-value', {}, person(c.referrer))),
      c.escalated_at ? h('div.field', {}, h('span.field-label', { i18n: ['dashboard.escalatedAt'] }), h('span.field-value', {}, timeEl(c.escalated_at))) : null,
      h('div.field.offered-to', {}, h('span.field-label', { i18n: ['dashboard.offeredTo'] }),
        h('span.field-value', {}, (c.offered_to || []).length ? ltr((c.offered_to || []).join(', ')) : h('span', { i18n: ['dashboard.offeredNobody'] })))));
  const history = (c.declines || []).length + (c.transfers || []).length;
  if (history) li.append(h('p.field-help', { i18n: ['dashboard.history', { declines: (c.declines || []).length, transfers: (c.transfers || []).length }] }));
  return li;
}

function liveItem(c) {
  return h(`li.live-item.urgency-${c.urgency}`, { dataset: { consultId: c.id, state: c.state } },
    urgencyBadge(c.urgency), specialtyEl(c.specialty, 'strong'), stateBadge(c.state),
    h('span.live-who', {}, h('span.field-label', { i18n: ['consult.specialist'] }), person(c.specialist)),
    h('span.live-where', {}, ltr(c.facility || '—')),
    c.accepted_at ? h('span.waiting', {}, waitingEl(c.accepted_at)) : null);
}

const STATUS_RANK = { available: 0, busy: 1, off: 2 };

function onCallItem(p) {
  const status = STATUS_RANK[p.status] !== undefined ? p.status : 'off';
  return h(`li.oncall-item.presence-${status}`, { dataset: { sub: p.sub, status } },
    h('span.presence-dot', { attrs: { 'aria-hidden': 'true' } }),
    h('span.oncall-name', { text: p.name || p.sub, attrs: { dir: 'auto' } }),
    h(`span.badge.presence-badge.presence-${status}`, { i18n: [`presence.${status}`] }),
    h('span.oncall-specialties', {}, ...(p.specialties || []).map((s) => specialtyEl(s, 'span'))));
}

function render() {
  if (!el.root) return;
  el.root.dataset.state = state;
  el.queue.replaceChildren(...URGENCIES.map(queueTile));
  const esc = Array.from(escalated.values()).sort((a, b) => (a.escalated_at || 0) - (b.escalated_at || 0));
  el.escalations.replaceChildren(...esc.map(escalationItem));
  el.escalationsEmpty.hidden = esc.length > 0;
  el.escalations.closest('.dash-escalations').classList.toggle('has-escalations', esc.length > 0);
  const live = (data && data.live) || [];
  el.live.replaceChildren(...live.map(liveItem));
  el.liveEmpty.hidden = live.length > 0;
  const onCall = ((data && data.on_call) || []).slice().sort((a, b) => (STATUS_RANK[a.status] ?? 3) - (STATUS_RANK[b.status] ?? 3) || String(a.name || a.sub).localeCompare(String(b.name || b.sub)));
  el.onCall.replaceChildren(...onCall.map(onCallItem));
  el.onCallEmpty.hidden = onCall.length > 0;
  setText(el.onCallSummary, 'dashboard.onCallSummary', { n: onCall.filter((p) => p.status === 'available').length });
  const mean = (data && data.mean_time_to_accept_s) || {};
  el.mean.replaceChildren(...URGENCIES.map((u) => {
    const v = mean[u];
    const [key, args] = v !== undefined ? durationArgs(v) : ['dashboard.noAccepts', null];
    return h('div.mean-item', { dataset: { urgency: u } }, h('dt', {}, urgencyBadge(u)), h('dd', { i18n: [key, args] }));
  }));
  if (loadedAt) {
    const locale = getLang() === 'ar' ? 'ar-u-nu-latn' : 'en-GB';
    setText(el.updated, 'dashboard.updated', { time: new Intl.DateTimeFormat(locale, { hour: '2-digit', minute: '2-digit', second: '2-digit' }).format(new Date(loadedAt)) });
  }
  else setText(el.updated, state === 'error' ? 'dashboard.failed' : 'dashboard.loading');
  renderAlert();
}

async function load() {
  if (loading) return loading;
  loading = (async () => {
    const started = Date.now();
    try {
      const next = await request('GET', '/api/dashboard');
      data = next;
      fetchedAt = serverNow();
      loadedAt = Date.now();
      state = 'ok';
      escalated.clear();
      for (const c of next.escalated || []) escalated.set(c.id, c);
      // A push newer than this read is not in it yet; an older one it has settled.
      for (const [id, p] of pushed) {
        if (p.at >= started) { if (!escalated.has(id)) escalated.set(id, p.consult); } else pushed.delete(id);
      }
    } catch (err) {
      state = 'error';
      if (!['network'].includes(err.code)) showError(err);
    } finally {
      loading = null;
    }
    render();
  })();
  return loading;
}

function loadSoon(ms = 300) {
  clearTimeout(soonTimer);
  soonTimer = setTimeout(load, ms);
}

function onEscalated(c) {
  if (!c || !c.id || c.state !== 'waiting') return;
  escalated.set(c.id, c);
  pushed.set(c.id, { consult: c, at: Date.now() });
  const at = alerting.indexOf(c.id);
  if (at >= 0) alerting.splice(at, 1);
  alerting.push(c.id);
  render();
  playAlert('escalation');
  loadSoon();
}

function onUpdated(c) {
  if (c && c.id && escalated.has(c.id)) {
    if (c.state !== 'waiting') {
      escalated.delete(c.id);
      pushed.delete(c.id);
    } else escalated.set(c.id, c);
    render();
  }
  loadSoon();
}

export function setupDashboard(pageCtx) {
  ctx = pageCtx;
  build();
  render();
  ctx.sig.addEventListener('consult.escalated', (e) => onEscalated(e.detail.consult));
  ctx.sig.addEventListener('consult.updated', (e) => onUpdated(e.detail.consult));
  ctx.sig.addEventListener('session.ended', () => loadSoon());
  ctx.sig.addEventListener('ready', () => load());
  const view = document.getElementById('session-view');
  if (view) new MutationObserver(() => renderAlert()).observe(view, { attributes: true, attributeFilter: ['hidden'] });
  setInterval(load, POLL_MS);
  onLangChange(() => render());
  registerHookSource('dashboard', () => ({
    escalations: Array.from(escalated.values()).map((c) => ({
      id: c.id, urgency: c.urgency, specialty: c.specialty, facility: c.facility, patient_ref: c.patient_ref,
      escalated_at: c.escalated_at || null, offered_to: c.offered_to || [], waitingSince: c.created_at,
      inList: !!document.querySelector(`#escalations .escalation-item[data-consult-id="${CSS.escape(c.id)}"]`),
    })),
    escalationAlert: { shown: !!(el.alert && !el.alert.hidden), count: alerting.length, consultIds: alerting.slice() },
    dashboard: {
      state,
      loadedAt,
      queue: data ? data.queue : null,
      live: data ? (data.live || []).length : null,
      liveIds: data ? (data.live || []).map((c) => c.id) : [],
      onCall: data ? (data.on_call || []).map((p) => ({ sub: p.sub, status: p.status })) : [],
      meanAccept: data ? data.mean_time_to_accept_s : null,
    },
  }));
  return { load };
}
