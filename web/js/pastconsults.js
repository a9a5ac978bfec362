// Past consults: ended and cancelled consults read from the record store
// (GET /api/records/consults), kept for years after the live state forgets them; a
// referrer sees its facility's, a specialist its own, a supervisor or admin its
// organisation's. Opening one (GET /api/records/consults/{id}, audited on the server)
// shows its report and its history.
//
// Elements (static markup in the page, wired here):
//   #past-section                       the card
//   #past-list                          ul of li.consult-item.past-item[data-consult-id]
//   .open-past[data-consult-id]         open this consult (report and history)
//   #past-detail[data-consult-id]       the opened consult: .report-view (report.js),
//                                       ol.past-history > li[data-state]
//   #past-close, #past-refresh, #past-count, #past-empty, #past-unavailable
// Hook: adds `past` ({ids, status, opened, report: {findings, assessment, recommendation}}).

import { request } from './api.js';
import { registerHookSource } from './hook.js';
import { h, showError, consultCard, stateBadge, timeEl } from './ui.js';
import { reportView } from './report.js';

const UNAVAILABLE = ['records_unavailable', 'not_found'];

class PastConsults {
  constructor() {
    this.el = {
      section: document.getElementById('past-section'),
      list: document.getElementById('past-list'),
      detail: document.getElementById('past-detail'),
      count: document.getElementById('past-count'),
      empty: document.getElementById('past-empty'),
      unavailable: document.getElementById('past-unavailable'),
    };
    this.consults = [];
    this.status = 'idle'; // idle | loading | ok | unavailable | error
    this.opened = null; // {consult, history}
  }

  async refresh() {
    this.status = 'loading';
    try {
      const data = await request('GET', '/api/records/consults');
      this.consults = (data && data.consults) || [];
      this.status = 'ok';
    } catch (err) {
      this.consults = [];
      this.status = UNAVAILABLE.includes(err.code) ? 'unavailable' : 'error';
      if (this.status === 'error') showError(err);
    }
    this.render();
  }

  async open(id) {
    try {
      this.opened = await request('GET', `/api/records/consults/${encodeURIComponent(id)}`);
    } catch (err) {
      showError(err);
      return;
    }
    this.renderDetail();
    this.el.detail.focus();
  }

  close() {
    const id = this.opened && this.opened.consult.id;
    this.opened = null;
    this.renderDetail();
    const btn = id && this.el.list.querySelector(`.open-past[data-consult-id="${CSS.escape(id)}"]`);
    if (btn) btn.focus();
  }

  item(c) {
    const open = h('button.btn.btn-secondary.open-past', {
      attrs: { type: 'button' }, dataset: { consultId: c.id }, i18n: ['past.open'],
      on: { click: () => this.open(c.id) },
    });
    const when = h('p.past-when', {}, h('span.field-label', { i18n: ['past.ended'] }), ' ',
      c.ended_at ? timeEl(c.ended_at, { withDate: true }) : '—');
    const marker = h('span.badge.past-report', { i18n: [c.has_report ? 'past.hasReport' : 'past.noReport'] });
    const li = consultCard(c, { actions: [open], extra: h('div.past-extra', {}, when, marker) });
    li.classList.add('past-item');
    return li;
  }

  render() {
    const { list, count, empty, unavailable } = this.el;
    list.replaceChildren(...this.consults.map((c) => this.item(c)));
    count.textContent = String(this.consults.length);
    empty.hidden = !(this.status === 'ok' && !this.consults.length);
    unavailable.hidden = this.status !== 'unavailable';
    this.renderDetail();
  }

  renderDetail() {
    const box = this.el.detail;
    if (!this.opened) {
      box.hidden = true;
      box.replaceChildren();
      delete box.dataset.consultId;
      return;
    }
    const { consult, history } = this.opened;
    box.dataset.consultId = consult.id;
    const close = h('button.btn.btn-secondary#past-close', { attrs: { type: 'button' }, i18n: ['past.close'], on: { click: () => this.close() } });
    const title = h('h2.past-detail-title', { i18n: ['past.detailTitle', { patient: consult.patient_ref || '' }] });
    const steps = h('ol.past-history', {}, ...(history || []).map((e) => h('li', { dataset: { state: e.state } },
      timeEl(e.at, { withDate: true }), ' ', stateBadge(e.state))));
    const report = reportView(consult, { download: true, heading: 'h3' })
      || h('p.empty', { i18n: ['report.none'] });
    box.replaceChildren(h('div.player-head', {}, title, close),
      h('p.summary', { text: consult.summary || '', attrs: { dir: 'auto' } }),
      report,
      h('h3', { i18n: ['past.history'] }), steps);
    box.hidden = false;
  }

  snapshot() {
    const c = this.opened && this.opened.consult;
    const r = c && c.report;
    return {
      past: {
        status: this.status,
        ids: this.consults.map((x) => x.id),
        opened: c ? c.id : null,
        report: r ? { findings: r.findings, assessment: r.assessment, recommendation: r.recommendation } : null,
        history: this.opened ? (this.opened.history || []).map((e) => e.state) : [],
        shownText: this.el.detail.hidden ? '' : this.el.detail.innerText,
      },
    };
  }
}

/** Wire the past-consults card of this page (once signed in); returns it. */
export function setupPastConsults() {
  const past = new PastConsults();
  document.getElementById('past-refresh').addEventListener('click', () => past.refresh());
  registerHookSource('past', () => past.snapshot());
  past.refresh();
  return past;
}
