// The recordings list and player (GET /api/recordings, GET /api/recordings/{id}/media).
// The supervisor page lists every recording; referrer and specialist pages list their own
// ("My recordings", shown only when there is one). Media is fetched with the bearer header
// and played from a blob: URL, so the token never goes into a URL.
//
// Elements (static markup in the page, wired here):
//   #recordings-section                  the card (hidden on participant pages until needed)
//   #recording-list                      ul of li.recording-item[data-recording-id][data-state]
//                                        (date, duration, participants, state, consent record)
//   .play-recording[data-recording-id]   play this recording in the player
//   #recording-count, #refresh-recordings, #recordings-empty, #recordings-unavailable
//   #recording-player-box                shown once something is played
//   #recording-tiles                     filled here: one figure.player-tile[data-participant]
//                                        [data-kind=participant] per participant with media
//                                        and one [data-kind=screen] per recorded screen share,
//                                        each a <video> (src a blob: URL) and its translated
//                                        label; the leading one is
//                                        <video id="recording-player" controls>
//   #recording-player-title, #recording-player-status, #recording-player-close
// A browser plays only the first video and audio track of a file, so each participant's
// camera and microphone are fetched as their own rendition (?participant=<slot>), and so
// is each shared screen (?participant=<slot>-screen); renditions share the recording's
// time origin, so the followers simply track the leader's currentTime.
// Hook: adds `recordings` (ids), `recordingList`, `recordingsStatus` and `player` (the
// leading video, plus `tiles`: one entry per tile, screens included, with its `kind`).

import { t, has, setText, onLangChange, formatDateTime } from './i18n.js';
import { api, fetchRecordingMedia } from './api.js';
import { registerHookSource } from './hook.js';
import { h, showError, stateBadge, timeEl, durationArgs, ltr } from './ui.js';

const PLAYABLE = new Set(['complete', 'interrupted']);
const NOT_THERE = new Set(['recording_not_found', 'recording_tampered', 'forbidden']);
// A follower further than this from the leader is moved to it.
const DRIFT_S = 0.25;
// What the hook reports while no video leads (nothing loaded yet).
const NO_VIDEO = { src: '', readyState: 0, currentTime: NaN, duration: NaN, videoWidth: 0, videoHeight: 0, paused: true, ended: false, error: null };

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
  const tilesBox = document.getElementById('recording-tiles');
  const title = document.getElementById('recording-player-title');
  const status = document.getElementById('recording-player-status');
  const close = document.getElementById('recording-player-close');

  let recordings = [];
  let listStatus = 'idle'; // idle | loading | ok | unavailable | error
  let refreshing = null;
  let timer = null;
  let followTimer = null; // while a listed recording is still running
  // What is in the player. tiles: [{participant, kind, figure, caption, video, note, url, start}],
  // one per participant with media (participant null: the whole recording, from an older
  // server) and one per shared screen (kind 'screen');
  // leader: the tile whose controls drive the others, once every tile has loaded.
  const nothingPlaying = () => ({ id: null, loading: false, error: null, controller: null, tiles: [], leader: null });
  let playing = nothingPlaying();

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

  function releaseUrls() {
    for (const tile of playing.tiles) {
      if (tile.url) URL.revokeObjectURL(tile.url);
      tile.url = null;
    }
  }

  function clearTiles() {
    releaseUrls();
    for (const tile of playing.tiles) {
      tile.video.pause();
      tile.video.removeAttribute('src');
      tile.video.load();
    }
    tilesBox.replaceChildren();
  }

  // kind 'participant': their camera and microphone; 'screen': the screen they shared,
  // which has no sound, so its tile stays muted.
  function makeTile({ participant, kind }, index) {
    const screen = kind === 'screen';
    const labelId = `recording-tile-label-${index}`;
    const video = h('video', {
      attrs: { playsinline: true, preload: 'auto', 'aria-labelledby': participant ? `recording-player-title ${labelId}` : 'recording-player-title' },
    });
    video.muted = screen;
    const figure = h('figure.player-tile', { dataset: { participant: participant || 'all', kind } });
    const caption = participant ? h(`figcaption#${labelId}`) : null;
    if (caption) {
      const key = `recordings.${screen ? 'screen' : 'participant'}.${participant}`;
      if (has(key)) setText(caption, key);
      else caption.textContent = screen ? `${participant}-screen` : participant;
      figure.append(caption);
    }
    figure.append(video);
    const note = screen ? null : h('p.tile-note', { i18n: ['recordings.audioOnly'], attrs: { hidden: true } });
    if (note) figure.append(note);
    const tile = { participant, kind, figure, caption, video, note, url: null, start: 0 };
    video.addEventListener('error', () => {
      if (tile.url) setStatus('recordings.playerError'); // clearing the source also fires 'error'
    });
    video.addEventListener('loadeddata', () => {
      if (note) note.hidden = video.videoWidth > 0; // a participant recorded without a camera
    });
    return tile;
  }

  // What the media request asks for: a participant's rendition or their screen's.
  function rendition(tile) {
    return tile.kind === 'screen' ? `${tile.participant}-screen` : tile.participant;
  }

  function loaded(video) {
    return new Promise((resolve) => {
      if (video.readyState >= 2 || video.error) return resolve();
      const done = () => {
        video.removeEventListener('loadeddata', done);
        video.removeEventListener('error', done);
        resolve();
      };
      video.addEventListener('loadeddata', done);
      video.addEventListener('error', done);
    });
  }

  // The leader's controls drive every tile, so its timeline should cover theirs: the tile
  // that starts first (at the recording's start), and of those the one that ends last.
  // A participant's tile leads whenever one plays: its controls carry their sound, and a
  // screen is usually shared for part of the consult only.
  function pickLeader(tiles) {
    const ends = (tile) => (Number.isFinite(tile.video.duration) ? tile.video.duration : 0);
    const people = tiles.some((tile) => tile.kind === 'participant' && !tile.video.error);
    let best = null;
    for (const tile of tiles) {
      if (tile.video.error || (people && tile.kind !== 'participant')) continue;
      const sameStart = best && Math.abs(tile.start - best.start) <= DRIFT_S;
      if (!best || (!sameStart && tile.start < best.start) || (sameStart && ends(tile) > ends(best) + DRIFT_S)) best = tile;
    }
    return best || tiles[0];
  }

  // Followers do what the leader does: play, pause, seek, rate, volume; any that drifted
  // more than DRIFT_S is moved back to the leader's time.
  function follow(tiles, leader) {
    const lead = leader.video;
    if (lead.ended) return; // a participant who stayed longer plays on to their own end
    const now = lead.currentTime;
    for (const tile of tiles) {
      const v = tile.video;
      if (tile === leader || v.readyState < 1 || v.error) continue;
      if (v.playbackRate !== lead.playbackRate) v.playbackRate = lead.playbackRate;
      if (tile.kind !== 'screen') {
        if (v.volume !== lead.volume) v.volume = lead.volume;
        if (v.muted !== lead.muted) v.muted = lead.muted;
      }
      // A participant who joined late (or left early) has media in part of the shared
      // timeline only; outside it their tile holds its first (or last) frame.
      const end = Number.isFinite(v.duration) ? v.duration : Infinity;
      const run = !lead.paused && now >= tile.start && now < end;
      if (run && v.paused) {
        v.currentTime = now; // start exactly where the leader is, not where it was paused
        v.play().catch(() => {});
        continue;
      }
      if (!run && !v.paused) v.pause();
      const target = Math.min(Math.max(now, tile.start), end);
      if (Math.abs(v.currentTime - target) > DRIFT_S) v.currentTime = target;
    }
  }

  function lead(tiles, leader) {
    const v = leader.video;
    v.id = 'recording-player';
    v.controls = true;
    const sync = () => {
      if (playing.tiles === tiles) follow(tiles, leader);
    };
    for (const name of ['play', 'pause', 'seeking', 'seeked', 'ratechange', 'volumechange', 'timeupdate']) {
      v.addEventListener(name, sync);
    }
    v.addEventListener('playing', () => setStatus(null));
  }

  async function play(id) {
    if (playing.loading && playing.id === id) return;
    box.hidden = false;
    section.hidden = false;
    const leader = playing.leader;
    if (playing.id === id && leader && !playing.tiles.some((tile) => tile.video.error)) {
      // Already loaded: play it again from the start, without fetching (and auditing) again.
      leader.video.currentTime = 0;
      leader.video.play().catch(() => {});
      leader.video.focus();
      return;
    }
    if (playing.controller) playing.controller.abort();
    clearTiles();
    const controller = new AbortController();
    playing = { ...nothingPlaying(), id, loading: true, controller };
    const current = () => playing.controller === controller;
    setTitle();
    setStatus('recordings.loadingMedia');
    render();
    box.scrollIntoView({ block: 'nearest' });
    try {
      // Which participants have media and which shared a screen (an older server does not
      // say: the whole recording, in one tile).
      const info = await api.getRecording(id);
      if (!current()) return;
      const slots = info && Array.isArray(info.media_participants) && info.media_participants.length ? info.media_participants : [null];
      const screens = slots[0] !== null && Array.isArray(info.media_screens) ? info.media_screens : [];
      const tiles = [
        ...slots.map((participant) => ({ participant, kind: 'participant' })),
        ...screens.map((participant) => ({ participant, kind: 'screen' })),
      ].map(makeTile);
      playing.tiles = tiles;
      tilesBox.replaceChildren(...tiles.map((tile) => tile.figure));
      const progress = tiles.map(() => [0, 0]);
      const blobs = await Promise.all(tiles.map((tile, i) => fetchRecordingMedia(id, {
        participant: rendition(tile),
        signal: controller.signal,
        onProgress: (got, total) => {
          if (!current()) return;
          progress[i] = [got, total];
          const [sumGot, sumTotal] = progress.reduce(([g, n], [a, b]) => [g + a, n + b], [0, 0]);
          if (progress.every(([, n]) => n)) setStatus('recordings.loadingPercent', { percent: Math.min(100, Math.round((100 * sumGot) / sumTotal)) });
        },
      })));
      if (!current()) return;
      tiles.forEach((tile, i) => {
        tile.url = URL.createObjectURL(blobs[i]);
        tile.video.src = tile.url;
      });
      await Promise.all(tiles.map((tile) => loaded(tile.video)));
      if (!current()) return;
      // Where each rendition's media begins on the shared timeline (a late joiner's is later).
      for (const tile of tiles) tile.start = Number.isFinite(tile.video.currentTime) ? tile.video.currentTime : 0;
      playing.leader = pickLeader(tiles);
      playing.loading = false;
      lead(tiles, playing.leader);
      setStatus(tiles.some((tile) => tile.video.error) ? 'recordings.playerError' : null);
      render();
      playing.leader.video.focus();
      const p = playing.leader.video.play();
      // Autoplay can be refused once the click is a while ago: the controls are there.
      if (p && p.catch) p.catch(() => setStatus('recordings.pressPlay'));
    } catch (err) {
      if (!current() || (err && err.name === 'AbortError')) return;
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
    clearTiles();
    const id = playing.id;
    playing = nothingPlaying();
    box.hidden = true;
    setStatus(null);
    render();
    const again = id && list.querySelector(`.play-recording[data-recording-id="${CSS.escape(id)}"]`);
    if (again) again.focus();
  }

  close.addEventListener('click', closePlayer);
  if (refreshButton) refreshButton.addEventListener('click', () => refresh());
  window.addEventListener('pagehide', releaseUrls);
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
    const player = playing.leader ? playing.leader.video : NO_VIDEO;
    const broken = playing.tiles.map((tile) => tile.video.error).find(Boolean);
    const err = broken ? { code: `media_error_${broken.code}`, message: broken.message || '' } : playing.error;
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
        tiles: playing.tiles.map((tile) => ({
          participant: tile.participant,
          kind: tile.kind,
          leader: tile === playing.leader,
          src: tile.video.src.startsWith('blob:'),
          readyState: tile.video.readyState,
          currentTime: finite(tile.video.currentTime),
          start: tile.start,
          duration: finite(tile.video.duration),
          videoWidth: tile.video.videoWidth,
          videoHeight: tile.video.videoHeight,
          paused: tile.video.paused,
          ended: tile.video.ended,
          muted: tile.video.muted,
          label: tile.caption ? tile.caption.textContent : null,
        })),
      },
    };
  });

  render();
  return { refresh, refreshSoon };
}
