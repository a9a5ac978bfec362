// The elements of the session view (session.js runs the session and calls these):
// building the view and its stage, and rendering the consult line, the roster, the
// observer notice and what is said over each remote tile.
//
// Elements (inside #session-view, built here):
//   #session-view[data-session-id][data-as][data-state]   the whole view (its data-*
//        attributes are set by session.js)
//   #connection-state[data-state][data-pc-state][data-server-state]
//        data-state: connecting | connected | reconnecting | failed | ended
//   #connection-detail        browser / server media states in words
//   #leave                    leave the session (it stays open for the others)
//   #end-session, #end-session-confirm, #end-session-cancel   participants: end for all
//   #observer-notice          participants: who is observing (hidden when nobody)
//   #roster                   ul; li.roster-entry[data-sub][data-role][data-as]
//   participants: #remote-video, #local-video (muted preview), #remote-waiting
//   observers:    #remote-video-referrer, #remote-video-specialist,
//                 #remote-waiting-referrer, #remote-waiting-specialist
//   #enable-audio             shown when the browser blocked autoplay with sound
//   #session-ended[data-reason][data-report], #session-ended-report, #session-back   after
//        session.ended / end / session.replaced: who ended it and where the report stands
//        (sessionended.js)
//   #stage (the pictures, sized to the window by fitStage), #fullscreen (the stage full
//        screen), .session-bar (under the stage, or beside it on a short landscape screen)
//   #session-duration
//   Low-bandwidth mode and quality (quality.js): #connection-quality[data-quality],
//   #connection-quality-detail, #audio-only[data-audio-only], #quality-notice,
//   #quality-notice-audio-only, #quality-notice-dismiss, #local-video-off;
//   #session-view[data-quality][data-audio-only]. Over a remote tile, #remote-waiting*
//   also says when its video stopped (paused or stalled) while the session goes on.
//   Recording (sessionrecording.js): #record-request, #recording-bar,
//   #recording-indicator[data-state], #recording-requested, #record-stop,
//   #recording-withdraw, #recording-consent, #recording-consent-yes,
//   #recording-consent-no; #session-view[data-recording] is the recording state
//   (idle | requested | recording | paused | stopped)
//   Screen share (screenshare.js): #share-screen (participants), #remote-screen
//   (participants), #remote-screen-referrer / #remote-screen-specialist (observers)

import { t, setText } from './i18n.js';
import { h, urgencyBadge, specialtyEl, ltr, waitingEl } from './ui.js';

export function eyeIcon() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'icon');
  const p = document.createElementNS(ns, 'path');
  p.setAttribute('d', 'M12 5C6.5 5 2.3 8.6 1 12c1.3 3.4 5.5 7 11 7s9.7-3.6 11-7c-1.3-3.4-5.5-7-11-7zm0 11.5A4.5 4.5 0 1 1 12 7.5a4.5 4.5 0 0 1 0 9zm0-7a2.5 2.5 0 1 0 0 5 2.5 2.5 0 0 0 0-5z');
  p.setAttribute('fill', 'currentColor');
  svg.append(p);
  return svg;
}

// ---- building ---------------------------------------------------------------------

/** Leave, and (participants) end for everyone with its confirmation. */
function sessionButtons(view) {
  const button = (spec, key, hidden, onClick) => h(spec, { attrs: { type: 'button', hidden }, i18n: [key], on: { click: onClick } });
  return {
    leave: button('button#leave.btn.btn-secondary.btn-large', 'session.leave', false, () => view.leave()),
    end: button('button#end-session.btn.btn-danger.btn-large', 'session.end', true, () => view.askEnd(true)),
    endConfirm: button('button#end-session-confirm.btn.btn-danger.btn-large', 'session.endConfirm', true, () => view.end()),
    endCancel: button('button#end-session-cancel.btn.btn-secondary.btn-large', 'session.endKeep', true, () => view.askEnd(false)),
  };
}

function sideColumn() {
  const roster = h('ul#roster.roster', { attrs: { 'aria-live': 'polite' } });
  const side = h('aside.session-side', {},
    h('h2.roster-title', { i18n: ['session.rosterTitle'] }), roster,
    h('div.session-case'));
  return { roster, side };
}

/**
 * Empty the view's root and build the session view in it (hidden). `view` supplies the
 * recording and quality panels and the actions the buttons call. Returns the elements.
 */
export function buildViewElements(view) {
  const r = view.root;
  r.replaceChildren();
  r.hidden = true;
  r.classList.add('session-view');
  const rec = view.recording.build();
  const qual = view.quality.build();
  const stage = h('div#stage.stage', { attrs: { role: 'region' }, i18nAttrs: { 'aria-label': 'session.picture' } });
  const controls = controlBar(view, rec, qual, stage);
  // Over the picture (a chip at its top), never a banner pushing the picture down.
  const observerNotice = h('div#observer-notice.observer-notice', { attrs: { hidden: true, role: 'status', 'aria-live': 'polite' } },
    eyeIcon(), h('span.observer-notice-text'));
  const enableAudio = h('button#enable-audio.btn.btn-primary.btn-large', { attrs: { type: 'button', hidden: true }, i18n: ['session.enableAudio'], on: { click: () => view.enableAudio() } });
  const { roster, side } = sideColumn();
  const ended = endedBox(view);
  // The picture leads: the stage (sized to the window by fitStage), then the controls
  // right under it; notices that need no decision come after them.
  r.append(ended, rec.consent, rec.announce,
    h('div.session-body', {}, h('div.stage-wrap', {}, stage, rec.badge, observerNotice, enableAudio, controls.bar, qual.notice, rec.bar), side));
  return { ...controls, observerNotice, stage, enableAudio, roster, side, ended };
}

/** The bar under the picture: the consult, the call's state, and its buttons. */
function controlBar(view, rec, qual, stage) {
  const conn = h('div#connection-state.conn-badge', { dataset: { state: 'connecting' }, attrs: { role: 'status', 'aria-live': 'polite' } },
    h('span.dot', { attrs: { 'aria-hidden': 'true' } }), h('span.conn-label', { i18n: ['media.connecting'] }));
  const detail = h('span#connection-detail.conn-detail');
  const buttons = sessionButtons(view);
  const info = h('div.session-info');
  const duration = h('span#session-duration.session-duration');
  const fullscreen = h('button#fullscreen.btn.btn-secondary', {
    attrs: { type: 'button', 'aria-pressed': 'false' }, i18n: ['session.fullscreen'],
    on: { click: () => toggleFullscreen(stage) },
  });
  const bar = h('div.session-bar', { attrs: { role: 'group' }, i18nAttrs: { 'aria-label': 'session.controls' } },
    info,
    h('div.session-status', {}, conn, qual.badge, detail, duration, qual.detail),
    h('div.session-actions', {}, qual.audioOnly, rec.request, fullscreen, buttons.leave, buttons.end, buttons.endConfirm, buttons.endCancel));
  return { conn, detail, ...buttons, fullscreen, bar, info, duration };
}

/** After the end: who ended it, where the report stands (sessionended.js), back. */
function endedBox(view) {
  return h('div#session-ended.session-ended', { attrs: { hidden: true, role: 'alert' } },
    h('div.session-ended-body', {}, h('p.session-ended-text'), h('p#session-ended-report.session-ended-report', { attrs: { hidden: true } })),
    h('button#session-back.btn.btn-primary.btn-large', { attrs: { type: 'button' }, i18n: ['session.back'], on: { click: () => view.exit(view.ended ? view.ended.reason : 'ended') } }));
}

/** Full screen for the stage (imaging), and back. */
function toggleFullscreen(stage) {
  if (document.fullscreenElement) {
    document.exitFullscreen().catch(() => {});
  } else if (stage.requestFullscreen) {
    stage.requestFullscreen().catch(() => {});
  }
}

/**
 * Size the stage so the whole picture (and the self-view in it) is in the window with
 * the controls under it (or beside it, on a short landscape screen): sets --stage-h on
 * the view. Called on join, on resize and whenever the bar's height changes.
 */
export function fitStage(view) {
  const { stage, bar } = view.el;
  if (!stage || view.root.hidden || document.fullscreenElement) return;
  const sr = stage.getBoundingClientRect();
  const br = bar.getBoundingClientRect();
  const beside = br.top < sr.bottom - 1 && br.height > 0;
  const under = beside ? 0 : br.height + 10;
  // Where the stage starts with the page scrolled to its top (the call opens there).
  const top = sr.top + window.scrollY;
  const avail = window.innerHeight - top - under - 8;
  view.root.style.setProperty('--stage-h', `${Math.max(160, Math.floor(avail))}px`);
}

/** What can move the stage or the bar: observed so the picture is refitted. */
export function fitTargets(view) {
  const consent = view.root.querySelector('#recording-consent');
  return [view.el.bar, ...(consent ? [consent] : []), ...document.querySelectorAll('.topbar, .page-alerts, #notice, #escalation-alert')];
}

function remoteTile(view, { id, waitingId, captionKey, person, role }) {
  const video = h(`video#${id}.remote-video`, { attrs: { autoplay: true, playsinline: true } });
  const caption = h('figcaption', {}, h('span.tile-role', { i18n: [captionKey] }), ' ',
    h('span.tile-name', { text: person ? (person.name || person.sub) : '', attrs: { dir: 'auto' } }));
  const waiting = h(`div#${waitingId}.tile-waiting`, { attrs: { role: 'status' } });
  const fig = h('figure.tile.tile-remote', { dataset: { participant: role } }, video, waiting, caption);
  video.addEventListener('resize', () => view.updateOverlays());
  video.addEventListener('loadeddata', () => view.updateOverlays());
  return { fig, video, waiting, role, person };
}

function localTile() {
  const local = h('video#local-video.local-video', { attrs: { autoplay: true, playsinline: true, muted: true } });
  local.muted = true;
  const localOff = h('div#local-video-off.tile-waiting.tile-off', { attrs: { hidden: true }, i18n: ['quality.localOff'] });
  const fig = h('figure.tile.tile-local', {}, local, localOff, h('figcaption', { i18n: ['session.you'] }));
  return { fig, local, localOff };
}

/**
 * Fill the stage for how this page joined: an observer sees both participants, a
 * participant the other one and its own preview. Returns {remote, local, localOff}:
 * remote entries are {label, fig, video, waiting, role, person, transceivers}.
 */
export function buildStageTiles(view) {
  const stage = view.el.stage;
  stage.replaceChildren();
  stage.dataset.as = view.as;
  const c = view.consult || {};
  if (view.as === 'observer') {
    const a = remoteTile(view, { id: 'remote-video-referrer', waitingId: 'remote-waiting-referrer', captionKey: 'roles.referrer', person: c.referrer, role: 'referrer' });
    const b = remoteTile(view, { id: 'remote-video-specialist', waitingId: 'remote-waiting-specialist', captionKey: 'roles.specialist', person: c.specialist, role: 'specialist' });
    stage.append(a.fig, b.fig);
    return {
      remote: [{ label: 'referrer', ...a, transceivers: [] }, { label: 'specialist', ...b, transceivers: [] }],
      local: null,
      localOff: null,
    };
  }
  const other = view.myPart() === 'referrer' ? 'specialist' : 'referrer';
  const a = remoteTile(view, { id: 'remote-video', waitingId: 'remote-waiting', captionKey: `roles.${other}`, person: c[other], role: other });
  const mine = localTile();
  stage.append(a.fig, mine.fig);
  return { remote: [{ label: 'remote', ...a, transceivers: [] }], local: mine.local, localOff: mine.localOff };
}

// ---- rendering --------------------------------------------------------------------

/** The consult line in the bar, the case summary in the side column, the duration. */
export function renderConsultInfo(el, consult) {
  const c = consult || {};
  const info = el.info;
  info.replaceChildren();
  if (c.urgency) info.append(urgencyBadge(c.urgency));
  if (c.specialty) info.append(specialtyEl(c.specialty, 'strong'));
  if (c.patient_ref) info.append(h('span.info-item', {}, h('span.field-label', { i18n: ['consult.patientRef'] }), ' ', ltr(c.patient_ref)));
  if (c.facility) info.append(h('span.info-item', {}, h('span.field-label', { i18n: ['consult.facility'] }), ' ', ltr(c.facility)));
  const caseBox = el.side.querySelector('.session-case');
  caseBox.replaceChildren();
  if (c.summary) {
    caseBox.append(h('h2', { i18n: ['session.caseTitle'] }), h('p.summary', { text: c.summary, attrs: { dir: 'auto' } }));
  }
  el.duration.replaceChildren();
  const since = c.accepted_at || c.created_at;
  if (since) el.duration.append(h('span.field-label', { i18n: ['session.duration'] }), ' ', waitingEl(since));
}

function rosterEntry(p, mySub) {
  const li = h('li.roster-entry', { dataset: { sub: p.sub, role: p.role, as: p.as } });
  if (p.as === 'observer') li.append(eyeIcon());
  li.append(h('span.roster-name', { text: p.name || p.sub, attrs: { dir: 'auto' } }));
  if (p.sub === mySub) li.append(h('span.roster-you', { i18n: ['session.youSuffix'] }));
  li.append(h(`span.badge.role-badge.role-${p.role}`, { i18n: [`roles.${p.role}`] }));
  if (p.as === 'observer') li.append(h('span.badge.observer-badge', { i18n: ['session.observing'] }));
  return li;
}

/** Who is observing: an observer is told it observes; a participant, by whom. */
function renderObserverNotice(view) {
  const observers = view.roster.filter((p) => p.as === 'observer' && p.sub !== view.me.sub);
  const notice = view.el.observerNotice;
  const text = notice.querySelector('.observer-notice-text');
  if (view.as === 'observer') {
    setText(text, 'session.youObserve');
    notice.hidden = false;
    notice.dataset.count = String(observers.length);
  } else if (observers.length) {
    const names = observers.map((p) => p.name || p.sub).join(t('list.separator'));
    setText(text, 'session.observedBy', { names });
    notice.hidden = false;
    notice.dataset.count = String(observers.length);
  } else {
    notice.hidden = true;
    notice.dataset.count = '0';
  }
}

/** The roster (participants first) and the observer notice. */
export function renderRosterList(view) {
  const ul = view.el.roster;
  ul.replaceChildren();
  const sorted = view.roster.slice().sort((a, b) => (a.as === b.as ? 0 : a.as === 'participant' ? -1 : 1));
  for (const p of sorted) ul.append(rosterEntry(p, view.me.sub));
  if (!sorted.length && !view.ended) ul.append(h('li.roster-empty', { i18n: ['session.rosterEmpty'] }));
  renderObserverNotice(view);
}

/** What a remote tile says over its video ([key, args]), or null for nothing. */
function overlayText(view, r) {
  if (view.ended) return null;
  const name = r.person ? (r.person.name || r.person.sub) : t(`roles.${r.role}`);
  if (!view.presentParticipant(r.role)) return ['session.waitingFor', { name }];
  if (!r.video.videoWidth) return ['session.connectingTo', { name }];
  // A frozen last frame must not pass for live video.
  const stall = view.quality.stallOf(r);
  if (stall) return [`session.${stall}`, { name }];
  return null;
}

export function renderTileOverlays(view) {
  for (const r of view.remote) {
    const text = overlayText(view, r);
    if (text) {
      setText(r.waiting, text[0], text[1]);
      r.waiting.hidden = false;
    } else r.waiting.hidden = true;
  }
}
