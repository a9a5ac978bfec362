// Recording inside the session view (docs/protocol.md: recording.request / .consent /
// .stop, the recording.state push and the `recording` field of `joined`). The server
// enforces every consent rule; this only shows the state and sends the user's answers.
//
// Elements (built here, placed by sessionlayout.js):
//   #record-request              participants, while nothing is recorded or asked for:
//                                "Record for case review" (asking counts as consenting)
//   #recording-bar[data-state]   shown while a recording is requested, running or paused
//     #recording-indicator[data-state]   red dot + "Recording" / "Recording paused — waiting
//                                for consent", and who consented / who is awaited
//                                (only while state is recording or paused; observers too)
//     #recording-requested       while requested: who asked, who is awaited
//     #recording-withdraw        participants who consented: withdraw (stops the recording)
//     #record-stop               participants: stop the recording / cancel the request
//   #recording-consent           participants whose consent is null: the consent question,
//     #recording-consent-yes, #recording-consent-no
//   #recording-announce          screen-reader announcements of recording changes
//   .stage-rec-badge             "REC" over the video while recording (decorative)
// Errors (recording_unavailable, invalid_state, forbidden, …) go to #error-banner.

import { t, setText } from './i18n.js';
import { h, showError, clearError, showNotice } from './ui.js';

const ACTIVE = new Set(['requested', 'recording', 'paused']);
const SHOWN = new Set(['recording', 'paused']);
// Codes whose generic text would mislead here ("the consult or session has changed state").
const PRECISE = new Set(['invalid_state', 'forbidden', 'not_joined']);

function recDot() {
  return h('span.rec-dot', { attrs: { 'aria-hidden': 'true' } });
}

export class RecordingPanel {
  /** @param {import('./session.js').SessionView} view */
  constructor(view) {
    this.view = view;
    this.el = null;
    this.reset();
  }

  reset() {
    this.state = { state: 'idle', recording_id: null, requested_by: null, consents: [] };
    this.known = false; // a first state after joining is shown without "started"/"stopped" notices
    this.pending = null; // the message in flight: 'request' | 'consent' | 'stop'
    this.keepFocus = false;
    this.shownError = null; // the code of the last refusal this panel put on the banner
  }

  // ---- DOM ------------------------------------------------------------------------

  build() {
    const request = h('button#record-request.btn.btn-record.btn-large', {
      attrs: { type: 'button', hidden: true },
      i18nAttrs: { title: 'recording.requestHelp' },
      on: { click: () => this.send('request', 'recording.request') },
    }, recDot(), h('span', { i18n: ['recording.request'] }));
    const announce = h('p#recording-announce.visually-hidden', { attrs: { role: 'status', 'aria-live': 'assertive' } });
    const badge = h('span.stage-rec-badge', { attrs: { hidden: true, 'aria-hidden': 'true' } }, recDot(), h('span', { i18n: ['recording.badge'] }));
    this.el = { request, ...this.buildBar(), ...this.buildConsent(), announce, badge };
    this.render();
    return this.el;
  }

  /** #recording-bar: the indicator, who asked, and the withdraw and stop buttons. */
  buildBar() {
    const indicator = h('div#recording-indicator.recording-indicator', {
      dataset: { state: 'idle' },
      attrs: { hidden: true, role: 'status', 'aria-live': 'polite' },
    },
    h('span.rec-head', {}, recDot(), h('strong.rec-label')),
    h('span.rec-consents'));
    const requested = h('p#recording-requested.recording-requested', { attrs: { hidden: true, role: 'status', 'aria-live': 'polite' } });
    const withdraw = h('button#recording-withdraw.btn.btn-secondary', {
      attrs: { type: 'button', hidden: true },
      i18n: ['recording.withdraw'],
      on: { click: () => this.send('consent', 'recording.consent', { consent: false }) },
    });
    const stop = h('button#record-stop.btn.btn-danger', {
      attrs: { type: 'button', hidden: true },
      i18n: ['recording.stop'],
      on: { click: () => this.send('stop', 'recording.stop') },
    });
    const controls = h('div.recording-controls', {}, withdraw, stop);
    const bar = h('div#recording-bar.recording-bar', { dataset: { state: 'idle' }, attrs: { hidden: true } },
      indicator, requested, controls);
    return { bar, indicator, requested, withdraw, stop };
  }

  /** #recording-consent: the question put to a participant whose answer is awaited. */
  buildConsent() {
    const consentTitle = h('h2#recording-consent-title.recording-consent-title');
    const consentWhat = h('p#recording-consent-what', { i18n: ['recording.consentWhat'] });
    const consentRules = h('p', { i18n: ['recording.consentRules'] });
    const consentPaused = h('p.recording-consent-paused', { attrs: { hidden: true }, i18n: ['recording.consentPaused'] });
    const yes = h('button#recording-consent-yes.btn.btn-primary.btn-large', {
      attrs: { type: 'button' },
      i18n: ['recording.consentYes'],
      on: { click: () => this.send('consent', 'recording.consent', { consent: true }) },
    });
    const no = h('button#recording-consent-no.btn.btn-secondary.btn-large', {
      attrs: { type: 'button' },
      i18n: ['recording.consentNo'],
      on: { click: () => this.send('consent', 'recording.consent', { consent: false }) },
    });
    const consent = h('section#recording-consent.recording-consent', {
      attrs: { hidden: true, 'aria-labelledby': 'recording-consent-title', 'aria-describedby': 'recording-consent-what' },
    },
    h('div.recording-consent-head', {}, recDot(), consentTitle),
    consentWhat, consentRules, consentPaused,
    h('div.recording-consent-actions', {}, yes, no));
    return { consent, consentTitle, consentPaused, yes, no };
  }

  // ---- state ------------------------------------------------------------------------

  me() {
    return this.view.me || {};
  }

  isParticipant() {
    return this.view.as === 'participant' && !this.view.ended;
  }

  myConsent() {
    const mine = (this.state.consents || []).find((c) => c.sub === this.me().sub);
    return mine ? mine.consent : undefined;
  }

  /** A recording.state push, or the `recording` field of `joined`. */
  set(msg) {
    if (!msg || typeof msg !== 'object') return;
    const prev = this.known ? this.state : null;
    this.state = {
      state: msg.state || 'idle',
      recording_id: msg.recording_id || null,
      requested_by: msg.requested_by || null,
      consents: Array.isArray(msg.consents) ? msg.consents : [],
    };
    this.known = true;
    if (prev) this.noteTransition(prev, this.state);
    this.render();
  }

  /** The session ended or this page left it: the server stopped any recording. */
  ended() {
    const was = this.state.state;
    this.state = { ...this.state, state: SHOWN.has(was) ? 'stopped' : 'idle' };
    this.render();
  }

  nameOf(p) {
    if (!p) return '';
    if (p.sub === this.me().sub) return t('recording.you');
    return p.name || p.sub;
  }

  names(list) {
    return list.map((p) => this.nameOf(p)).join(t('list.separator'));
  }

  noteTransition(prev, next) {
    if (prev.state === next.state && prev.recording_id === next.recording_id) {
      // Same state, new answers: announce only a consent that is now needed from me.
      if (this.needsMyConsent() && prev.consents.find((c) => c.sub === this.me().sub)?.consent !== null) this.announcePrompt();
      return;
    }
    const declined = next.consents.find((c) => c.consent === false);
    let notice = null;
    if (ACTIVE.has(prev.state) && next.state === 'idle') {
      notice = declined ? ['recording.declined', { name: this.nameOf(declined) }] : ['recording.cancelled'];
    } else if (SHOWN.has(prev.state) && next.state === 'stopped') {
      notice = declined ? ['recording.withdrawn', { name: this.nameOf(declined) }] : ['recording.stopped'];
    } else if (next.state === 'recording' && prev.state === 'requested') {
      notice = ['recording.started'];
    } else if (next.state === 'recording' && prev.state === 'paused') {
      notice = ['recording.resumed'];
    } else if (next.state === 'paused') {
      notice = ['recording.pausedNotice'];
    }
    if (notice) {
      showNotice(notice[0], notice[1], { timeout: 8000 });
      setText(this.el.announce, notice[0], notice[1]);
    }
    if (this.needsMyConsent()) this.announcePrompt();
  }

  announcePrompt() {
    const by = this.state.requested_by;
    if (this.state.state === 'requested' && by && by.sub !== this.me().sub) setText(this.el.announce, 'recording.consentTitle', { name: by.name || by.sub });
    else setText(this.el.announce, 'recording.consentTitlePaused');
  }

  needsMyConsent() {
    return this.isParticipant() && ACTIVE.has(this.state.state) && this.myConsent() === null;
  }

  indicatorShown() {
    return !this.view.ended && this.view.active && SHOWN.has(this.state.state);
  }

  // ---- actions ----------------------------------------------------------------------

  async send(what, type, fields = {}) {
    if (this.pending || !this.isParticipant()) return;
    this.pending = what;
    // Disabled while in flight, the clicked button may drop keyboard focus: bring it back.
    this.keepFocus = this.hasFocus();
    this.render();
    try {
      await this.view.sig.request(type, fields);
      // recording.state follows to everyone in the session. An earlier refusal of a
      // recording message is no longer true: take it off the banner.
      const banner = document.getElementById('error-banner');
      if (this.shownError && banner && !banner.hidden && banner.dataset.code === this.shownError) clearError();
      this.shownError = null;
    } catch (err) {
      const code = err && err.code;
      showError(err, { key: PRECISE.has(code) ? `recording.errors.${code}` : undefined });
      this.shownError = code || 'unknown';
    } finally {
      this.pending = null;
      this.render();
      this.keepFocus = false;
    }
  }

  hasFocus() {
    const el = this.el;
    return !!el && [el.request, el.bar, el.consent].some((x) => x.contains(document.activeElement));
  }

  // ---- rendering --------------------------------------------------------------------

  /** What the panel shows now, worked out once per render. */
  displayState() {
    const s = this.state;
    const state = this.view.ended ? (SHOWN.has(s.state) ? 'stopped' : 'idle') : s.state;
    const participant = this.isParticipant();
    const consents = s.consents || [];
    const mine = this.myConsent();
    return {
      state,
      participant,
      requestedBy: s.requested_by,
      yes: consents.filter((c) => c.consent === true),
      waiting: consents.filter((c) => c.consent === null),
      mine,
      iAsked: s.requested_by && s.requested_by.sub === this.me().sub,
      busy: !!this.pending,
      // The consent question, while this participant's answer is null.
      ask: participant && ACTIVE.has(state) && mine === null,
    };
  }

  render() {
    const el = this.el;
    if (!el) return;
    const focusWasHere = this.hasFocus() || (this.keepFocus && (!document.activeElement || document.activeElement === document.body));
    const d = this.displayState();
    this.view.root.dataset.recording = this.view.active ? d.state : 'idle';

    // "Record for case review": participants, when nothing is recorded or asked for.
    el.request.hidden = !d.participant || !this.view.active || ACTIVE.has(d.state);
    el.request.disabled = d.busy;
    el.request.toggleAttribute('aria-busy', this.pending === 'request');

    // While only asked for, the question itself says it all to whoever must answer.
    el.bar.hidden = !this.view.active || !ACTIVE.has(d.state) || (d.state === 'requested' && d.ask);
    el.bar.dataset.state = d.state;
    this.renderIndicator(d);
    this.renderRequested(d);
    this.renderControls(d);
    this.renderConsent(d);
    if (focusWasHere) this.restoreFocus();
  }

  /** The indicator: every page in the session, participants and observers alike. */
  renderIndicator({ state, yes, waiting }) {
    const el = this.el;
    const shown = this.view.active && SHOWN.has(state);
    el.indicator.hidden = !shown;
    el.indicator.dataset.state = state;
    el.badge.hidden = !shown;
    el.badge.dataset.state = state;
    if (!shown) return;
    setText(el.indicator.querySelector('.rec-label'), state === 'paused' ? 'recording.paused' : 'recording.on');
    const parts = el.indicator.querySelector('.rec-consents');
    const text = [t('recording.consented', { names: yes.length ? this.names(yes) : t('recording.nobody') })];
    if (waiting.length) text.push(t('recording.waitingFor', { names: this.names(waiting) }));
    parts.textContent = text.join(' · ');
  }

  renderRequested({ state, iAsked, requestedBy, waiting }) {
    const el = this.el;
    el.requested.hidden = state !== 'requested';
    if (state !== 'requested') return;
    const who = iAsked ? t('recording.requestedByYou') : t('recording.requestedBy', { name: requestedBy ? requestedBy.name || requestedBy.sub : '' });
    const wait = waiting.length ? t('recording.requestedWaiting', { names: this.names(waiting) }) : '';
    el.requested.textContent = wait ? `${who} ${wait}` : who;
  }

  // Stop (or cancel the request) and withdraw: participants only; whoever has not
  // answered yet answers with the consent buttons instead ("No" stops it too).
  renderControls({ state, participant, ask, mine, iAsked, busy }) {
    const el = this.el;
    el.stop.hidden = !participant || !ACTIVE.has(state) || ask || (state === 'requested' && mine !== true);
    setText(el.stop, state === 'requested' ? 'recording.cancelRequest' : 'recording.stop');
    el.stop.disabled = busy;
    el.withdraw.hidden = !participant || !ACTIVE.has(state) || mine !== true || (state === 'requested' && iAsked);
    el.withdraw.disabled = busy;
  }

  renderConsent({ state, ask, requestedBy, iAsked, busy }) {
    const el = this.el;
    el.consent.hidden = !ask;
    if (ask) {
      const by = requestedBy;
      if (state === 'requested' && by && !iAsked) setText(el.consentTitle, 'recording.consentTitle', { name: by.name || by.sub });
      else if (state === 'requested') setText(el.consentTitle, 'recording.consentTitleGeneric');
      else setText(el.consentTitle, 'recording.consentTitlePaused');
      el.consentPaused.hidden = state !== 'paused';
    }
    el.yes.disabled = busy;
    el.no.disabled = busy;
    el.yes.toggleAttribute('aria-busy', this.pending === 'consent');
  }

  /** Keep keyboard focus somewhere sensible when the focused control disappears. */
  restoreFocus() {
    const el = this.el;
    const active = document.activeElement;
    const gone = !active || active === document.body || active.closest('[hidden]');
    if (!gone) return;
    const next = [el.yes, el.withdraw, el.stop, el.request, this.view.el && this.view.el.leave]
      .find((b) => b && !b.closest('[hidden]'));
    if (next) next.focus();
  }

  snapshot() {
    const s = this.state;
    return {
      state: this.view.active ? (this.view.ended && SHOWN.has(s.state) ? 'stopped' : s.state) : 'idle',
      recordingId: s.recording_id,
      requestedBy: s.requested_by ? s.requested_by.sub || null : null,
      consents: (s.consents || []).map((c) => ({ sub: c.sub, name: c.name, consent: c.consent })),
      myConsent: this.myConsent() === undefined ? null : this.myConsent(),
      indicator: !!(this.el && !this.el.indicator.hidden && this.indicatorShown()),
      prompt: !!(this.el && !this.el.consent.hidden),
      pending: this.pending,
    };
  }
}
