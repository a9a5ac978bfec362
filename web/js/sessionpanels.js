// Panels added to the session view (sessionlayout.js builds the view; this module keeps its
// own panels in it, re-attaching them whenever the view is rebuilt):
//   in the side column (.session-side), after the roster and the case:
//     section#session-attachments   the consult's case files (casepacket.js):
//                                   ul.attachment-list > li.attachment-item, .open-attachment;
//                                   the referrer also gets .attach-button and upload status
//     #report-open                  specialist: jump to the report form
//     section#chat                  chat (chat.js), participants and observers
//   under the video, in the stage's column (div#session-extras):
//     section#report-panel          specialist: the report form (report.js); sending it
//                                   closes the consult and ends the session
//     div#session-report            everyone else: the report (.report-view) once written
// Hook (registered as 'sessionpanels'): chat (chat.js), reportForm (specialist).

import { registerHookSource } from './hook.js';
import { ChatPanel } from './chat.js';
import { ReportForm, reportView } from './report.js';
import { attachmentList, attachButton, uploadStatus, packetEvents, setupCasePacket } from './casepacket.js';
import { h } from './ui.js';

/**
 * @param {object} ctx             startPage's context
 * @param {object} [o]
 * @param {Function} [o.pageAttachments]  what the page lists outside a session (hook)
 */
export function setupSessionPanels(ctx, { pageAttachments = () => [] } = {}) {
  const root = document.getElementById('session-view');
  const chat = new ChatPanel(ctx);
  const isSpecialist = ctx.me.role === 'specialist';
  const report = isSpecialist ? new ReportForm() : null;

  const attachList = h('div.session-attachment-list');
  const attachEmpty = h('p.empty.attachments-empty', { i18n: ['casepacket.none'] });
  const attachTools = h('div.session-attach-tools');
  const attachments = h('section#session-attachments.session-attachments', { attrs: { 'aria-labelledby': 'session-attachments-title' } },
    h('h2#session-attachments-title', { i18n: ['casepacket.title'] }), attachList, attachEmpty, attachTools);
  // #attachments is the list the specialist reads from (the brief's id); it wraps the list.
  attachList.id = 'attachments';

  const reportOpen = isSpecialist ? h('button#report-open.btn.btn-accept.btn-block', {
    attrs: { type: 'button' }, i18n: ['report.open'],
    on: { click: () => {
      report.el.scrollIntoView({ behavior: 'smooth', block: 'start' });
      const first = report.el.querySelector('textarea');
      if (first) first.focus({ preventScroll: true });
    } },
  }) : null;
  const reportBox = h('div#session-report.session-report');
  const extras = h('div#session-extras.session-extras', {}, report ? report.el : null, reportBox);

  const session = () => ctx.session;
  const myPart = () => {
    const s = session();
    if (!s.active || s.as !== 'participant') return null;
    return s.myPart ? s.myPart() : null;
  };

  function mount() {
    const side = root.querySelector('.session-side');
    if (side) {
      if (attachments.parentNode !== side) side.append(attachments);
      if (reportOpen && reportOpen.parentNode !== side) side.append(reportOpen);
      if (chat.el.parentNode !== side) side.append(chat.el);
    }
    // Under the video, in the stage's column (the side column spans both rows).
    const body = root.querySelector('.session-body');
    const home = body || root;
    if (extras.parentNode !== home) home.append(extras);
  }

  let attachKey = null;
  let reportKey = null;

  function renderAttachments({ force = false } = {}) {
    const s = session();
    const c = s.active ? s.consult : null;
    const key = JSON.stringify([c && c.id, c && c.state, (c && c.attachments || []).map((a) => a.id), myPart(), !!s.ended]);
    if (!force && key === attachKey) return;
    attachKey = key;
    const list = attachmentList(c);
    attachList.replaceChildren(...(list ? [list] : []));
    attachEmpty.hidden = !!list;
    const tools = [];
    if (c && myPart() === 'referrer' && ['waiting', 'accepted', 'live'].includes(c.state) && !s.ended) {
      tools.push(attachButton(c));
      const status = uploadStatus(c, { help: true, helpId: false });
      if (status) tools.push(status);
    }
    attachTools.replaceChildren(...tools);
    attachments.hidden = !c;
  }

  function update() {
    mount();
    const s = session();
    const c = s.active ? s.consult : null;
    chat.setSession(s.active ? s.sessionId : null, { ended: !!s.ended });
    chat.el.hidden = !s.active;
    renderAttachments();
    const writer = report && myPart() === 'specialist';
    if (report) {
      report.el.hidden = !writer || !c;
      if (writer && c) report.setConsult(c);
      if (reportOpen) reportOpen.hidden = !writer || !c || report.state !== 'editing' || !!s.ended;
    }
    const showView = !writer && c && c.report;
    const key = showView ? `${c.id}:${c.report_sha256}` : null;
    if (key !== reportKey) {
      reportKey = key;
      const view = showView ? reportView(c, { heading: 'h2' }) : null;
      reportBox.replaceChildren(...(view ? [view] : []));
      reportBox.hidden = !view;
    }
    extras.hidden = !s.active;
  }

  new MutationObserver(() => update()).observe(root, {
    childList: true, attributes: true, attributeFilter: ['data-state', 'data-as', 'data-session-id', 'hidden'],
  });
  for (const type of ['consult.updated', 'session.ended', 'roster']) {
    ctx.sig.addEventListener(type, () => update());
  }
  packetEvents.addEventListener('change', () => renderAttachments({ force: true }));
  update();

  setupCasePacket({
    source: () => {
      const s = session();
      if (s.active && s.consult) return (s.consult.attachments || []).map((a) => ({ ...a, consult_id: s.consult.id }));
      return pageAttachments();
    },
  });
  registerHookSource('sessionpanels', () => ({
    chat: chat.snapshot(),
    reportForm: report ? report.snapshot() : null,
  }));
  return { chat, report, update };
}
