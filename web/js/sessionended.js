// The ended view of a session (#session-ended, built by sessionlayout.js): who ended
// the session, and where the consult report stands — it may follow the end, and shows
// as soon as it arrives (consult.updated).
//
//   #session-ended[data-reason][data-report]  data-report: arrived | may_follow |
//                                              write_now | none
//   .session-ended-text        "The session has ended: Dr Karim (Specialist) ended it."
//   #session-ended-report      what to expect of the report

import { has, setText } from './i18n.js';

/** [key, args] for who ended the session. */
function endedText(ended, me) {
  const { reason, by, part } = ended;
  if (reason === 'replaced') return ['session.replaced'];
  if (by && by.sub === me.sub) return ['session.ended', { reason: { t: reason === 'reported' ? 'endReason.reported_by_you' : 'endReason.ended_by_you' } }];
  const name = by ? by.name || by.sub : null;
  if (name && reason === 'reported') return ['session.endedReported', { name }];
  if (name && (part === 'referrer' || part === 'specialist')) return ['session.endedBy', { name, role: { t: `roles.${part}` } }];
  if (name && reason === 'ended_by_admin') return ['session.endedBy', { name, role: { t: 'roles.admin' } }];
  return ['session.ended', { reason: { t: has(`endReason.${reason}`) ? `endReason.${reason}` : 'endReason.other' } }];
}

/** Where the report stands, for the one who reads this view. */
export function reportState(view) {
  const c = view.consult || {};
  if (c.report) return 'arrived';
  if (view.ended && view.ended.reason === 'replaced') return 'none';
  if (c.state && c.state !== 'ended') return 'none';
  if (!c.specialist) return 'none';
  const writer = view.as === 'participant' && c.specialist.sub === view.me.sub;
  return writer ? 'write_now' : 'may_follow';
}

export function renderEnded(view) {
  const box = view.el.ended;
  if (!view.ended) return;
  box.dataset.reason = view.ended.reason;
  const [key, args] = endedText(view.ended, view.me);
  setText(box.querySelector('.session-ended-text'), key, args);
  const state = reportState(view);
  box.dataset.report = state;
  const line = box.querySelector('#session-ended-report');
  line.hidden = state === 'none';
  if (state !== 'none') setText(line, `session.report.${state}`);
  box.hidden = false;
}
