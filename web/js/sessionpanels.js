// Panels added to the session view (sessionlayout.js builds the view; this module keeps its
// own panels in it, re-attaching them whenever the view is rebuilt):
//   in the side column (.session-side), after the roster and the case:
//     section#session-attachments   the consult's case files (casepacket.js):
//                                   ul.attachment-list > li.attachment-item, .open-attachment;
//                                   the referrer also gets .attach-button and upload status
//     #report-open                  specialist: jump to the report form
//     section#chat                  chat (chat.js), participants and observers
//   under the video, in the stage's column (div#session-extras):
//     section#report-panel          specialist: the report form (reportform.js); sending it
//                                   closes the consult and ends the session
//     div#session-report            everyone else: the report (.report-view) once written
// Hook (registered as 'sessionpanels'): chat (chat.js), reportForm (specialist).

import { registerHookSource } from './hook.js';
import { ChatPanel } from './chat.js';
import { reportView } from './report.js';
import { ReportForm } from './reportform.js';
import { attachmentList, attachButton, uploadStatus, packetEvents, setupCasePacket } from './casepacket.js';
import { h, scrollBehavior } from './ui.js';

function attachmentsSection() {
  const list = h('div.session-attachment-list');
  const empty = h('p.empty.attachments-empty', { i18n: ['casepacket.none'] });
  const tools = h('div.session-attach-tools');
  const section = h('section#session-attachments.session-attachments', { attrs: { 'aria-labelledby': 'session-attachments-title' } },
    h('h2#session-attachments-title', { i18n: ['casepacket.title'] }), list, empty, tools);
  // #attachments is the list the specialist reads from (the brief's id); it wraps the list.
  list.id = 'attachments';
  return { section, list, empty, tools };
}

/** Specialist: the button in the side column that brings the report form into view. */
function reportOpenButton(report) {
  return h('button#report-open.btn.btn-accept.btn-block', {
    attrs: { type: 'button' }, i18n: ['report.open'],
    on: { click: () => {
      report.el.scrollIntoView({ behavior: scrollBehavior(), block: 'start' });
      const first = report.el.querySelector('textarea');
      if (first) first.focus({ preventScroll: true });
    } },
  });
}

class SessionPanels {
  constructor(ctx) {
    this.ctx = ctx;
    this.root = document.getElementById('session-view');
    this.chat = new ChatPanel(ctx);
    this.report = ctx.me.role === 'specialist' ? new ReportForm() : null;
    this.attach = attachmentsSection();
    this.reportOpen = this.report ? reportOpenButton(this.report) : null;
    this.reportBox = h('div#session-report.session-report');
    this.extras = h('div#session-extras.session-extras', {}, this.report ? this.report.el : null, this.reportBox);
    // What was last rendered, so an unchanged consult is not rendered again.
    this.attachKey = null;
    this.reportKey = null;
  }

  get session() {
    return this.ctx.session;
  }

  myPart() {
    const s = this.session;
    if (!s.active || s.as !== 'participant') return null;
    return s.myPart ? s.myPart() : null;
  }

  /** Put the panels back into the view (it is rebuilt on every join and exit). */
  mount() {
    const side = this.root.querySelector('.session-side');
    if (side) {
      if (this.attach.section.parentNode !== side) side.append(this.attach.section);
      if (this.reportOpen && this.reportOpen.parentNode !== side) side.append(this.reportOpen);
      if (this.chat.el.parentNode !== side) side.append(this.chat.el);
    }
    // Under the video, in the stage's column (the side column spans both rows).
    const body = this.root.querySelector('.session-body');
    const home = body || this.root;
    if (this.extras.parentNode !== home) home.append(this.extras);
  }

  renderAttachments({ force = false } = {}) {
    const s = this.session;
    const c = s.active ? s.consult : null;
    const key = JSON.stringify([c && c.id, c && c.state, (c && c.attachments || []).map((a) => a.id), this.myPart(), !!s.ended]);
    if (!force && key === this.attachKey) return;
    this.attachKey = key;
    const list = attachmentList(c);
    this.attach.list.replaceChildren(...(list ? [list] : []));
    this.attach.empty.hidden = !!list;
    const tools = [];
    if (c && this.myPart() === 'referrer' && ['waiting', 'accepted', 'live'].includes(c.state) && !s.ended) {
      tools.push(attachButton(c));
      const status = uploadStatus(c, { help: true, helpId: false });
      if (status) tools.push(status);
    }
    this.attach.tools.replaceChildren(...tools);
    this.attach.section.hidden = !c;
  }

  /** The specialist's form while they write; everyone else the report once written. */
  renderReport(c) {
    const report = this.report;
    const writer = report && this.myPart() === 'specialist';
    if (report) {
      report.el.hidden = !writer || !c;
      if (writer && c) report.setConsult(c);
      if (this.reportOpen) this.reportOpen.hidden = !writer || !c || report.state !== 'editing' || !!this.session.ended;
    }
    const showView = !writer && c && c.report;
    const key = showView ? `${c.id}:${c.report_sha256}` : null;
    if (key === this.reportKey) return;
    this.reportKey = key;
    const view = showView ? reportView(c, { heading: 'h2' }) : null;
    this.reportBox.replaceChildren(...(view ? [view] : []));
    this.reportBox.hidden = !view;
  }

  update() {
    this.mount();
    const s = this.session;
    const c = s.active ? s.consult : null;
    this.chat.setSession(s.active ? s.sessionId : null, { ended: !!s.ended });
    this.chat.el.hidden = !s.active;
    this.renderAttachments();
    this.renderReport(c);
    this.extras.hidden = !s.active;
  }
}

/**
 * @param {object} ctx             startPage's context
 * @param {object} [o]
 * @param {Function} [o.pageAttachments]  what the page lists outside a session (hook)
 */
export function setupSessionPanels(ctx, { pageAttachments = () => [] } = {}) {
  const panels = new SessionPanels(ctx);
  const update = () => panels.update();
  new MutationObserver(update).observe(panels.root, {
    childList: true, attributes: true, attributeFilter: ['data-state', 'data-as', 'data-session-id', 'hidden'],
  });
  for (const type of ['consult.updated', 'session.ended', 'roster']) {
    ctx.sig.addEventListener(type, update);
  }
  packetEvents.addEventListener('change', () => panels.renderAttachments({ force: true }));
  update();

  setupCasePacket({
    source: () => {
      const s = ctx.session;
      if (s.active && s.consult) return (s.consult.attachments || []).map((a) => ({ ...a, consult_id: s.consult.id }));
      return pageAttachments();
    },
  });
  registerHookSource('sessionpanels', () => ({
    chat: panels.chat.snapshot(),
    reportForm: panels.report ? panels.report.snapshot() : null,
  }));
  return { chat: panels.chat, report: panels.report, update };
}
