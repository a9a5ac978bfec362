// The recordings card: the list of recordings (GET /api/recordings) and, through
// recordingplayer.js, the player. The supervisor page lists every recording; referrer and
// specialist pages list their own ("My recordings", shown only when there is one).
//
// Elements (static markup in the page, wired here):
//   #recordings-section                  the card (hidden on participant pages until needed)
//   #recording-list                      ul of li.recording-item[data-recording-id][data-state]
//                                        (date, duration, participants, state, consent record)
//   .play-recording[data-recording-id]   play this recording in the player
//   #recording-count, #refresh-recordings, #recordings-empty, #recordings-unavailable
//   The player's elements (#recording-player-box, #recording-tiles, #recording-player,
//   #recording-player-title, #recording-player-status, #recording-player-close): see
//   recordingplayer.js.
// Hook: adds `recordings` (ids), `recordingList`, `recordingsStatus` and `player` (the
// leading video, plus `tiles`: one entry per tile, screens included, with its `kind`).

import { t, setText, onLangChange, formatDateTime } from './i18n.js';
import { api } from './api.js';
import { registerHookSource } from './hook.js';
import { h, showError, stateBadge, timeEl, durationArgs, ltr } from './ui.js';
import { RecordingPlayer } from './recordingplayer.js';

const PLAYABLE = new Set(['complete', 'interrupted']);
// Consent-record events with a translated name; others show as the server sent them.
const KNOWN_EVENTS = ['requested', 'consented', 'declined', 'withdrawn', 'started', 'paused', 'resumed', 'stopped', 'cancelled'];
// A server without recordings (or without these endpoints yet) answers with one of these.
const UNAVAILABLE = ['recording_unavailable', 'not_found', 'method_not_allowed'];

function field(labelKey, ...value) {
  return h('div.field', {}, h('span.field-label', { i18n: [labelKey] }), h('span.field-value', {}, ...value));
}

function eventName(event) {
  return String(event || '').replace(/^recording\./, '');
}

// ---- one list item ------------------------------------------------------------------

function recordingHead(r, state) {
  const head = h('div.card-head', {});
  if (r.started_at) head.append(h('strong.recording-date', {}, timeEl(r.started_at, { withDate: true })));
  head.append(stateBadge(state, 'recording'));
  if (Number.isFinite(r.duration_s)) {
    const [key, args] = durationArgs(r.duration_s);
    head.append(h('span.recording-duration', {}, h('span.field-label', { i18n: ['recordings.duration'] }), h('span.field-value', { i18n: [key, args] })));
  }
  return head;
}

function recordingMeta(r) {
  const people = Array.isArray(r.participants) ? r.participants : [];
  const meta = h('div.card-meta', {},
    field('recordings.participants', h('span', { text: people.map((p) => p.name || p.sub).join(t('list.separator')) || '—', attrs: { dir: 'auto' } })));
  if (r.consult_id) meta.append(field('recordings.consult', ltr(r.consult_id)));
  return meta;
}

function consentEventRow(e) {
  const name = eventName(e.event);
  const label = h('span.consent-event-name');
  if (KNOWN_EVENTS.includes(name)) setText(label, `recordings.events.${name}`);
  else label.textContent = String(e.event || '');
  const row = h('li', { dataset: { event: e.event || '' } });
  if (e.at) row.append(timeEl(e.at), ' ');
  row.append(label);
  if (e.by) row.append(' — ', h('span', { text: e.by.name || e.by.sub, attrs: { dir: 'auto' } }));
  return row;
}

/** details.consent-record of a recording (null when it has no consent record). */
function consentRecord(r) {
  const record = Array.isArray(r.consent_record) ? r.consent_record : [];
  if (!record.length) return null;
  const ol = h('ol.consent-events', {}, ...record.map(consentEventRow));
  return h('details.consent-record', {}, h('summary', { i18n: ['recordings.consentRecord', { n: record.length }] }), ol);
}

function playButton(r, state, loading, onPlay) {
  const playable = PLAYABLE.has(state);
  const btn = h('button.btn.btn-primary.play-recording', {
    attrs: { type: 'button', disabled: !playable || loading, 'aria-busy': loading ? 'true' : null },
    dataset: { recordingId: r.id },
    i18n: [!playable ? (state === 'recording' ? 'recordings.inProgress' : 'recordings.notPlayable') : (loading ? 'recordings.loading' : 'recordings.play')],
    on: { click: onPlay },
  });
  if (r.started_at && playable && !loading) btn.setAttribute('aria-label', t('recordings.playLabel', { date: formatDateTime(r.started_at) }));
  return btn;
}

// ---- the list -----------------------------------------------------------------------

class RecordingList {
  /**
   * @param {object} el        {section, list, count, empty, unavailable, refreshButton}
   * @param {object} playerEl  the player's elements (RecordingPlayer)
   * @param {boolean} hideWhenEmpty  participant pages: no card until there is a recording
   */
  constructor(el, playerEl, hideWhenEmpty) {
    this.el = el;
    this.hideWhenEmpty = hideWhenEmpty;
    this.recordings = [];
    this.status = 'idle'; // idle | loading | ok | unavailable | error
    this.refreshing = null; // the list request in flight
    this.soonTimer = null;
    this.followTimer = null; // while a listed recording is still running
    this.player = new RecordingPlayer({ ...playerEl, section: el.section }, {
      recordingOf: (id) => this.find(id),
      changed: () => this.render(),
      closed: (id) => this.focusPlayButton(id),
      missing: () => this.refreshSoon(0),
    });
  }

  find(id) {
    return this.recordings.find((r) => r.id === id) || null;
  }

  item(r) {
    const state = r.state || 'complete';
    const li = h(`li.recording-item.card.state-${state}`, { dataset: { recordingId: r.id, state } });
    if (this.player.id === r.id) li.dataset.playing = 'true';
    const head = recordingHead(r, state);
    li.append(head, recordingMeta(r));
    const record = consentRecord(r);
    if (record) li.append(record);
    const btn = playButton(r, state, this.player.isLoading(r.id), () => this.player.play(r.id));
    head.append(h('span.recording-play', {}, btn));
    return li;
  }

  focusPlayButton(id) {
    const again = id && this.el.list.querySelector(`.play-recording[data-recording-id="${CSS.escape(id)}"]`);
    if (again) again.focus();
  }

  render() {
    const { list, empty, unavailable, count, section } = this.el;
    const focused = document.activeElement && list.contains(document.activeElement) ? document.activeElement.dataset.recordingId : null;
    list.replaceChildren(...this.recordings.map((r) => this.item(r)));
    if (focused) this.focusPlayButton(focused);
    empty.hidden = !(this.status === 'ok' && this.recordings.length === 0);
    if (unavailable) unavailable.hidden = this.status !== 'unavailable';
    if (count) {
      count.hidden = this.status !== 'ok';
      setText(count, 'recordings.count', { n: this.recordings.length });
    }
    if (this.hideWhenEmpty) section.hidden = this.recordings.length === 0 && !this.player.id;
  }

  /** Re-read the list; a call while one is in flight shares it. */
  refresh() {
    if (!this.refreshing) this.refreshing = this.reload();
    return this.refreshing;
  }

  async reload() {
    const button = this.el.refreshButton;
    if (this.status !== 'ok') this.status = 'loading';
    if (button) button.setAttribute('aria-busy', 'true');
    try {
      const data = await api.listRecordings();
      this.recordings = (data && Array.isArray(data.recordings)) ? data.recordings : [];
      this.status = 'ok';
    } catch (err) {
      this.listFailed(err);
    } finally {
      if (button) button.removeAttribute('aria-busy');
      this.refreshing = null;
    }
    this.render();
    this.followRunning();
  }

  listFailed(err) {
    if (UNAVAILABLE.includes(err.code)) {
      this.status = 'unavailable';
      this.recordings = [];
      return;
    }
    this.status = 'error';
    // Participant pages: a list they may not have is no reason for a red banner.
    if (!this.hideWhenEmpty) showError(err);
  }

  // A recording still running finishes without any push to this page (unless it is in
  // that session): look again soon so its Play button comes on by itself.
  followRunning() {
    clearTimeout(this.followTimer);
    if (this.recordings.some((r) => r.state === 'recording')) this.followTimer = setTimeout(() => this.refresh(), 5000);
  }

  refreshSoon(ms = 400) {
    clearTimeout(this.soonTimer);
    this.soonTimer = setTimeout(() => this.refresh(), ms);
  }

  snapshot() {
    return {
      recordings: this.recordings.map((r) => r.id),
      recordingList: this.recordings.map((r) => ({
        id: r.id, state: r.state, session_id: r.session_id || null, consult_id: r.consult_id || null,
        duration_s: Number.isFinite(r.duration_s) ? r.duration_s : null,
      })),
      recordingsStatus: this.status,
    };
  }
}

// ---- setup --------------------------------------------------------------------------

function listElements() {
  const section = document.getElementById('recordings-section');
  const list = document.getElementById('recording-list');
  if (!section || !list) return null;
  return {
    section,
    list,
    count: document.getElementById('recording-count'),
    empty: document.getElementById('recordings-empty'),
    unavailable: document.getElementById('recordings-unavailable'),
    refreshButton: document.getElementById('refresh-recordings'),
  };
}

function playerElements() {
  return {
    box: document.getElementById('recording-player-box'),
    tilesBox: document.getElementById('recording-tiles'),
    title: document.getElementById('recording-player-title'),
    status: document.getElementById('recording-player-status'),
    close: document.getElementById('recording-player-close'),
  };
}

// A recording is finished when it is stopped or its session ends.
function refreshOnServerChanges(sig, list) {
  sig.addEventListener('recording.state', (e) => {
    if (['stopped', 'idle'].includes(e.detail.state)) list.refreshSoon(800);
    else if (e.detail.state === 'recording') list.refreshSoon(1500);
  });
  sig.addEventListener('session.ended', () => list.refreshSoon(800));
  sig.addEventListener('consult.updated', (e) => {
    const c = e.detail.consult;
    if (c && c.state === 'ended') list.refreshSoon(800);
  });
  sig.addEventListener('ready', () => list.refreshSoon(0));
}

/**
 * @param {object} ctx          the page context from startPage (sig, session, me)
 * @param {object} [o]
 * @param {boolean} [o.hideWhenEmpty]  participant pages: no card until there is a recording
 * @param {number}  [o.pollMs]         refresh this often while the page is visible (0: never)
 */
export function setupRecordings(ctx, { hideWhenEmpty = false, pollMs = 0 } = {}) {
  const el = listElements();
  if (!el) return { refresh: async () => {}, refreshSoon: () => {} };
  const list = new RecordingList(el, playerElements(), hideWhenEmpty);
  const player = list.player;
  if (el.refreshButton) el.refreshButton.addEventListener('click', () => list.refresh());
  window.addEventListener('pagehide', () => player.releaseUrls());
  onLangChange(() => {
    list.render();
    player.retitle();
  });
  refreshOnServerChanges(ctx.sig, list);
  if (pollMs) {
    setInterval(() => {
      if (document.visibilityState === 'visible') list.refresh();
    }, pollMs);
  }
  registerHookSource('recordings', () => ({ ...list.snapshot(), player: player.snapshot() }));
  list.render();
  return { refresh: () => list.refresh(), refreshSoon: (ms) => list.refreshSoon(ms) };
}
