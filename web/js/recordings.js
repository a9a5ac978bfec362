// The recordings list and player (GET /api/recordings, GET /api/recordings/{id}/media).
// The supervisor page lists every recording; referrer and specialist pages list their own
// ("My recordings", shown only when there is one). Media is fetched with the bearer header
// and played from a blob: URL, so the token never goes into a URL.
//
// Elements (static markup in the page, wired here):
//   #recordings-section                  the card (hidden on participant pages until needed)
//   #recording-list                      ul of li.recording-item[data-recording-id][data-state]
//                                        (date, duration, participants, state, consent record)
//   .play-recording[data-recording-id]   play this recording in #recording-player
//   #recording-count, #refresh-recordings, #recordings-empty, #recordings-unavailable
//   #recording-player-box                shown once something is played
//   #recording-player                    <video controls>, src is a blob: URL
//   #recording-player-title, #recording-player-status, #recording-player-close
// Hook: adds `recordings` (ids), `recordingList`, `recordingsStatus` and `player`.

import { t, setText, onLangChange, formatDateTime } from './i18n.js';
import { api, fetchRecordingMedia } from './api.js';
import { registerHookSource } from './hook.js';
import { h, showError, stateBadge, timeEl, durationArgs, ltr } from './ui.js';

const PLAYABLE = new Set(['complete', 'interrupted']);
const NOT_THERE = new Set(['recording_not_found', 'recording_tampered', 'forbidden']);

function field(labelKey, ...value) {
  return h('div.field', {}, h('span.field-label', { i18n: [labelKey] }), h('span.field-value', {}, ...value));
}

function eventName(event) {
  return String(event || '').replace(/^recording\./, '');
}

/**
 * @param {object} ctx          the page context from startPage (sig, session, me)
 * @param {object} [o]
 * @param {boolean} [o.hideWhenEmpty]  participant pages: no card until there is a recording
 * @param {number}  [o.pollMs]         refresh this often while the page is visible (0: never)
 */
export function setupRecordings(ctx, { hideWhenEmpty = false, pollMs = 0 } = {}) {
  const section = document.getElementById('recordings-section');
  const list = document.getElementById('recording-list');
  if (!section || !list) return { refresh: async () => {}, refreshSoon: () => {} };
  const count = document.getElementById('recording-count');
  const empty = document.getElementById('recordings-empty');
  const unavailable = document.getElementById('recordings-unavailable');
  const refreshButton = document.getElementById('refresh-recordings');
  const box = document.getElementById('recording-player-box');
  const player = document.getElementById('recording-player');
  const title = document.getElementById('recording-player-title');
  const status = document.getElementById('recording-player-status');
  const close = document.getElementById('recording-player-close');

  let recordings = [];
  let listStatus = 'idle'; // idle | loading | ok | unavailable | error
  let refreshing = null;
  let timer = null;
  let followTimer = null; // while a listed recording is still running
  // What is in the player: {id, url, loading, error, controller}
  let playing = { id: null, url: null, loading: false, error: null, controller: null };

  function findRecording(id) {
    return recordings.find((r) => r.id === id) || null;
  }

  function item(r) {
    const state = r.state || 'complete';
    const li = h(`li.recording-item.card.state-${state}`, { dataset: { recordingId: r.id, state } });
    if (playing.id === r.id) li.dataset.playing = 'true';
    const head = h('div.card-head', {});
    if (r.started_at) head.append(h('strong.recording-date', {}, timeEl(r.started_at, { withDate: true })));
    head.append(stateBadge(state, 'recording'));
    if (Number.isFinite(r.duration_s)) {
      const [key, args] = durationArgs(r.duration_s);
      head.append(h('span.recording-duration', {}, h('span.field-label', { i18n: ['recordings.duration'] }), h('span.field-value', { i18n: [key, args] })));
    }
    li.append(head);

    const people = Array.isArray(r.participants) ? r.participants : [];
    const meta = h('div.card-meta', {},
      field('recordings.participants', h('span', { text: people.map((p) => p.name || p.sub).join(t('list.separator')) || '—', attrs: { dir: 'auto' } })));
    if (r.consult_id) meta.append(field('recordings.consult', ltr(r.consult_id)));
    li.append(meta);

    const record = Array.isArray(r.consent_record) ? r.consent_record : [];
    if (record.length) {
      const ol = h('ol.consent-events', {}, ...record.map((e) => {
        const name = eventName(e.event);
        const label = h('span.consent-event-name');
        if (['requested', 'consented', 'declined', 'withdrawn', 'started', 'paused', 'resumed', 'stopped', 'cancelled'].includes(name)) setText(label, `recordings.events.${name}`);
        else label.textContent = String(e.event || '');
        const row = h('li', { dataset: { event: e.event || '' } });
        if (e.at) row.append(timeEl(e.at), ' ');
        row.append(label);
        if (e.by) row.append(' — ', h('span', { text: e.by.name || e.by.sub, attrs: { dir: 'auto' } }));
        return row;
      }));
      li.append(h('details.consent-record', {}, h('summary', { i18n: ['recordings.consentRecord', { n: record.length }] }), ol));
    }

    const playable = PLAYABLE.has(state);
    const loadingThis = playing.loading && playing.id === r.id;
    const btn = h('button.btn.btn-primary.play-recording', {
      attrs: { type: 'button', disabled: !playable || loadingThis, 'aria-busy': loadingThis ? 'true' : null },
      dataset: { recordingId: r.id },
      i18n: [!playable ? (state === 'recording' ? 'recordings.inProgress' : 'recordings.notPlayable') : (loadingThis ? 'recordings.loading' : 'recordings.play')],
      on: { click: () => play(r.id) },
    });
    if (r.started_at && playable && !loadingThis) btn.setAttribute('aria-label', t('recordings.playLabel', { date: formatDateTime(r.started_at) }));
    head.append(h('span.recording-play', {}, btn));
    return li;
  }

  function render() {
    const focused = document.activeElement && list.contains(document.activeElement) ? document.activeElement.dataset.recordingId : null;
    list.replaceChildren(...recordings.map(item));
    if (focused) {
      const again = list.querySelector(`.play-recording[data-recording-id="${CSS.escape(focused)}"]`);
      if (again) again.focus();
    }
    empty.hidden = !(listStatus === 'ok' && recordings.length === 0);
    if (unavailable) unavailable.hidden = listStatus !== 'unavailable';
    if (count) {
      count.hidden = listStatus !== 'ok';
      setText(count, 'recordings.count', { n: recordings.length });
    }
    if (hideWhenEmpty) section.hidden = recordings.length === 0 && !playing.id;
  }

  async function refresh() {
    if (refreshing) return refreshing;
    refreshing = (async () => {
      if (listStatus !== 'ok') listStatus = 'loading';
      if (refreshButton) refreshButton.setAttribute('aria-busy', 'true');
      try {
        const data = await api.listRecordings();
        recordings = (data && Array.isArray(data.recordings)) ? data.recordings : [];
        listStatus = 'ok';
      } catch (err) {
        // A server without recordings (or without these endpoints yet) says so calmly.
        if (['recording_unavailable', 'not_found', 'method_not_allowed'].includes(err.code)) {
          listStatus = 'unavailable';
          recordings = [];
        } else {
          listStatus = 'error';
          // Participant pages: a list they may not have is no reason for a red banner.
          if (!hideWhenEmpty) showError(err);
        }
      } finally {
        if (refreshButton) refreshButton.removeAttribute('aria-busy');
        refreshing = null;
      }
      render();
      // A recording still running finishes without any push to this page (unless it is
      // in that session): look again soon so its Play button comes on by itself.
      clearTimeout(followTimer);
      if (recordings.some((r) => r.state === 'recording')) followTimer = setTimeout(refresh, 5000);
    })();
    return refreshing;
  }

  function refreshSoon(ms = 400) {
    clearTimeout(timer);
    timer = setTimeout(refresh, ms);
  }

  // ---- player ----------------------------------------------------------------------

  function setStatus(key, args) {
    if (!key) {
      status.textContent = '';
      delete status.dataset.i18n;
      status.hidden = true;
      return;
    }
    setText(status, key, args);
    status.hidden = false;
  }

  function setTitle() {
    const r = findRecording(playing.id);
    if (r && r.started_at) setText(title, 'recordings.playerTitle', { date: formatDateTime(r.started_at) });
    else setText(title, 'recordings.playerTitleShort');
  }

  function releaseUrl() {
    if (playing.url) URL.revokeObjectURL(playing.url);
    playing.url = null;
  }

  async function play(id) {
    if (playing.loading && playing.id === id) return;
    box.hidden = false;
    section.hidden = false;
    if (playing.id === id && playing.url && !player.error) {
      // Already loaded: play it again from the start, without fetching (and auditing) again.
      player.currentTime = 0;
      player.play().catch(() => {});
      player.focus();
      return;
    }
    if (playing.controller) playing.controller.abort();
    player.pause();
    player.removeAttribute('src');
    player.load();
    releaseUrl();
    const controller = new AbortController();
    playing = { id, url: null, loading: true, error: null, controller };
    setTitle();
    setStatus('recordings.loadingMedia');
    render();
    box.scrollIntoView({ block: 'nearest' });
    try {
      const blob = await fetchRecordingMedia(id, {
        signal: controller.signal,
        onProgress: (got, total) => {
          if (playing.controller !== controller) return;
          if (total) setStatus('recordings.loadingPercent', { percent: Math.min(100, Math.round((100 * got) / total)) });
        },
      });
      if (playing.controller !== controller) return;
      playing.url = URL.createObjectURL(blob);
      playing.loading = false;
      player.src = playing.url;
      setStatus(null);
      render();
      player.focus();
      const p = player.play();
      // Autoplay can be refused once the click is a while ago: the controls are there.
      if (p && p.catch) p.catch(() => setStatus('recordings.pressPlay'));
    } catch (err) {
      if (playing.controller !== controller || (err && err.name === 'AbortError')) return;
      playing.loading = false;
      playing.error = { code: err.code || 'unknown', message: err.message || '' };
      setStatus('recordings.loadFailed');
      showError(err);
      render();
      if (NOT_THERE.has(err.code)) refreshSoon(0);
    }
  }

  function closePlayer() {
    if (playing.controller) playing.controller.abort();
    player.pause();
    player.removeAttribute('src');
    player.load();
    releaseUrl();
    const id = playing.id;
    playing = { id: null, url: null, loading: false, error: null, controller: null };
    box.hidden = true;
    setStatus(null);
    render();
    const again = id && list.querySelector(`.play-recording[data-recording-id="${CSS.escape(id)}"]`);
    if (again) again.focus();
  }

  player.addEventListener('error', () => {
    if (!playing.url) return; // clearing the source also fires 'error'
    setStatus('recordings.playerError');
  });
  player.addEventListener('playing', () => setStatus(null));
  close.addEventListener('click', closePlayer);
  if (refreshButton) refreshButton.addEventListener('click', () => refresh());
  window.addEventListener('pagehide', releaseUrl);
  onLangChange(() => {
    render();
    if (playing.id) setTitle();
  });

  // A recording is finished when it is stopped or its session ends.
  ctx.sig.addEventListener('recording.state', (e) => {
    if (['stopped', 'idle'].includes(e.detail.state)) refreshSoon(800);
    else if (e.detail.state === 'recording') refreshSoon(1500);
  });
  ctx.sig.addEventListener('session.ended', () => refreshSoon(800));
  ctx.sig.addEventListener('consult.updated', (e) => {
    const c = e.detail.consult;
    if (c && c.state === 'ended') refreshSoon(800);
  });
  ctx.sig.addEventListener('ready', () => refreshSoon(0));
  if (pollMs) {
    setInterval(() => {
      if (document.visibilityState === 'visible') refresh();
    }, pollMs);
  }

  registerHookSource('recordings', () => {
    const finite = (x) => (Number.isFinite(x) ? x : null);
    const err = player.error ? { code: `media_error_${player.error.code}`, message: player.error.message || '' } : playing.error;
    return {
      recordings: recordings.map((r) => r.id),
      recordingList: recordings.map((r) => ({
        id: r.id, state: r.state, session_id: r.session_id || null, consult_id: r.consult_id || null,
        duration_s: finite(r.duration_s),
      })),
      recordingsStatus: listStatus,
      player: {
        src: typeof player.src === 'string' && player.src.startsWith('blob:'),
        recordingId: playing.id,
        loading: playing.loading,
        readyState: player.readyState,
        currentTime: finite(player.currentTime),
        duration: finite(player.duration),
        videoWidth: player.videoWidth,
        videoHeight: player.videoHeight,
        paused: player.paused,
        ended: player.ended,
        error: err || null,
      },
    };
  });

  render();
  return { refresh, refreshSoon };
}
