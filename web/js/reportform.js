// The specialist's report form, in the session view (placed by sessionpanels.js):
// POST /api/consults/{id}/report {findings, assessment, recommendation,
// follow_up_urgency}; sending it closes the consult and, during the call, ends the
// session (report.js shows the report once written). It stays open after the session
// ended without a report, and its help says what sending does in each case.
//
// Elements:
//   section#report-panel[data-state=editing|submitting|sent|closed]
//   form#report-form: #report-findings, #report-assessment, #report-recommendation
//   (textareas), #report-follow-up (select: critical | urgent | routine | none),
//   #report-submit, #report-error, field errors #report-<field>-error.
//   A draft is kept in sessionStorage per consult until it is sent.

import { setText, has } from './i18n.js';
import { request } from './api.js';
import { h } from './ui.js';
import { REPORT_FIELDS, reportView } from './report.js';

const FOLLOW_UP = ['critical', 'urgent', 'routine', 'none'];
const DRAFT_KEY = 'jisr.reportDraft.';

/** The specialist's report form for the consult of the current session. */
export class ReportForm {
  constructor() {
    this.consult = null;
    this.state = 'editing';
    this.error = null;
    this.build();
  }

  build() {
    const field = (name) => {
      const ta = h(`textarea#report-${name}.report-input`, { attrs: { rows: 4, maxlength: 5000, required: true, dir: 'auto', name, 'aria-describedby': `report-${name}-error` } });
      ta.addEventListener('input', () => { this.saveDraft(); this.fieldError(name, null); });
      return h('div.form-row', {},
        h('label.label', { attrs: { for: `report-${name}` }, i18n: [`report.fields.${name}`] }),
        ta,
        h(`p#report-${name}-error.field-error`, { attrs: { hidden: true } }));
    };
    this.followUp = h('select#report-follow-up', { attrs: { required: true, name: 'follow_up_urgency', 'aria-describedby': 'report-follow_up_urgency-error' } },
      h('option', { attrs: { value: '' }, i18n: ['report.followUp.choose'] }),
      ...FOLLOW_UP.map((v) => h('option', { attrs: { value: v }, i18n: [`report.followUp.${v}`] })));
    this.followUp.addEventListener('change', () => { this.saveDraft(); this.fieldError('follow_up_urgency', null); });
    this.submitBtn = h('button#report-submit.btn.btn-accept.btn-large', { attrs: { type: 'submit', 'aria-describedby': 'report-submit-help' }, i18n: ['report.submit'] });
    this.errorEl = h('p#report-error.field-error', { attrs: { hidden: true, role: 'alert' } });
    this.form = h('form#report-form.report-form', { attrs: { novalidate: true } },
      ...REPORT_FIELDS.map(field),
      h('div.form-row', {},
        h('label.label', { attrs: { for: 'report-follow-up' }, i18n: ['report.fields.follow_up_urgency'] }),
        this.followUp,
        h('p#report-follow_up_urgency-error.field-error', { attrs: { hidden: true } })),
      this.submitHelp = h('p#report-submit-help.field-help.report-submit-help', { i18n: ['report.submitHelp'] }),
      this.errorEl,
      h('div.report-actions', {}, this.submitBtn));
    this.form.addEventListener('submit', (e) => { e.preventDefault(); this.submit(); });
    this.done = h('div.report-done', { attrs: { role: 'status', 'aria-live': 'polite' } });
    this.closedNote = h('p.report-closed', { attrs: { hidden: true } });
    this.help = h('p.field-help', { i18n: ['report.formHelp'] });
    this.el = h('section#report-panel.report-panel.card', { dataset: { state: 'editing' }, attrs: { 'aria-labelledby': 'report-panel-title' } },
      h('h2#report-panel-title', { i18n: ['report.formTitle'] }),
      this.help,
      this.form, this.done, this.closedNote);
  }

  /** Follow the session's consult; a different consult starts a new form (or its draft). */
  setConsult(c) {
    const changed = !this.consult || !c || this.consult.id !== c.id;
    if (!changed && this.consult.report && !c.report) {
      // The session's copy of the consult may not carry the report we just sent yet.
      c = { ...c, report: this.consult.report, report_sha256: this.consult.report_sha256 };
    }
    this.consult = c;
    if (changed) {
      this.state = 'editing';
      this.error = null;
      this.errorEl.hidden = true;
      this.loadDraft();
    }
    if (c && c.report) {
      if (this.state !== 'sent' || changed) this.showSent(c);
    } else if (c && ['cancelled', 'expired'].includes(c.state) && this.state !== 'submitting') this.setState('closed');
    else if (this.state === 'closed') this.setState('editing');
    this.renderHelp();
  }

  /** What sending does now: during the call it also ends the session for everyone. */
  renderHelp() {
    const after = !!(this.consult && this.consult.state === 'ended');
    this.el.dataset.phase = after ? 'after_end' : 'in_call';
    setText(this.help, after ? 'report.formHelpEnded' : 'report.formHelp');
    setText(this.submitHelp, after ? 'report.submitHelpEnded' : 'report.submitHelp');
  }

  setState(state) {
    this.state = state;
    this.el.dataset.state = state;
    this.form.hidden = state === 'sent' || state === 'closed';
    this.help.hidden = this.form.hidden;
    this.closedNote.hidden = state !== 'closed';
    if (state === 'closed') setText(this.closedNote, 'report.closedWithout');
    this.done.hidden = state !== 'sent';
    for (const x of this.form.elements) x.disabled = state === 'submitting';
    if (state === 'submitting') this.submitBtn.setAttribute('aria-busy', 'true');
    else this.submitBtn.removeAttribute('aria-busy');
  }

  showSent(c) {
    this.clearDraft(c.id);
    this.done.replaceChildren(h('p.report-sent', { i18n: ['report.sent'] }), reportView(c, { heading: 'h3' }));
    this.setState('sent');
  }

  values() {
    const v = {};
    for (const f of REPORT_FIELDS) v[f] = this.form.querySelector(`#report-${f}`).value.trim();
    v.follow_up_urgency = this.followUp.value;
    return v;
  }

  fieldError(name, key) {
    const el = this.el.querySelector(`#report-${name}-error`);
    const input = name === 'follow_up_urgency' ? this.followUp : this.el.querySelector(`#report-${name}`);
    if (!key) {
      el.hidden = true;
      input.removeAttribute('aria-invalid');
      return;
    }
    setText(el, key);
    el.hidden = false;
    input.setAttribute('aria-invalid', 'true');
  }

  async submit() {
    if (!this.consult || this.state === 'submitting' || this.state === 'sent') return;
    const v = this.values();
    let first = null;
    for (const f of REPORT_FIELDS) {
      const bad = !v[f];
      this.fieldError(f, bad ? `report.required.${f}` : null);
      if (bad && !first) first = this.el.querySelector(`#report-${f}`);
    }
    const badFollow = !FOLLOW_UP.includes(v.follow_up_urgency);
    this.fieldError('follow_up_urgency', badFollow ? 'report.required.follow_up_urgency' : null);
    if (badFollow && !first) first = this.followUp;
    if (first) {
      first.focus();
      return;
    }
    this.errorEl.hidden = true;
    this.setState('submitting');
    try {
      const updated = await request('POST', `/api/consults/${encodeURIComponent(this.consult.id)}/report`, v);
      this.consult = { ...this.consult, ...updated };
      this.showSent(this.consult);
    } catch (err) {
      this.setState('editing');
      this.error = err.code;
      const key = err.code === 'invalid_state' ? 'report.errors.invalid_state'
        : err.code === 'forbidden' ? 'report.errors.forbidden'
          : has(`errors.${err.code}`) ? `errors.${err.code}` : 'errors.unknown';
      setText(this.errorEl, key);
      this.errorEl.hidden = false;
      this.submitBtn.focus();
    }
  }

  draftKey(id) {
    return DRAFT_KEY + (id || (this.consult && this.consult.id));
  }

  saveDraft() {
    if (!this.consult) return;
    try { sessionStorage.setItem(this.draftKey(), JSON.stringify(this.values())); } catch { /* ignore */ }
  }

  loadDraft() {
    let draft = {};
    try { draft = JSON.parse(sessionStorage.getItem(this.draftKey()) || '{}') || {}; } catch { draft = {}; }
    for (const f of REPORT_FIELDS) this.form.querySelector(`#report-${f}`).value = draft[f] || '';
    this.followUp.value = FOLLOW_UP.includes(draft.follow_up_urgency) ? draft.follow_up_urgency : '';
    for (const f of [...REPORT_FIELDS, 'follow_up_urgency']) this.fieldError(f, null);
    this.setState('editing');
  }

  clearDraft(id) {
    try { sessionStorage.removeItem(this.draftKey(id)); } catch { /* ignore */ }
  }

  snapshot() {
    return {
      consultId: this.consult ? this.consult.id : null,
      state: this.state,
      phase: this.el.dataset.phase || null,
      error: this.error,
      sha256: this.consult && this.consult.report_sha256 ? this.consult.report_sha256 : null,
    };
  }
}
