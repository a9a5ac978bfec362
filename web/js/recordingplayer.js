// The player of the recordings card (recordings.js lists the recordings and owns the
// card; this plays one). Media is fetched with the bearer header
// (GET /api/recordings/{id}/media) and played from a blob: URL, so the token never goes
// into a URL.
//
// Elements (static markup in the page, wired here):
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
// Hook: `player` (the leading video, plus `tiles`: one entry per tile, screens included,
// with its `kind`), through recordings.js.

import { has, setText, formatDateTime } from './i18n.js';
import { api, fetchRecordingMedia } from './api.js';
import { h, showError } from './ui.js';

const NOT_THERE = new Set(['recording_not_found', 'recording_tampered', 'forbidden']);
// A follower further than this from the leader is moved to it.
const DRIFT_S = 0.25;
// What the hook reports while no video leads (nothing loaded yet).
const NO_VIDEO = { src: '', readyState: 0, currentTime: NaN, duration: NaN, videoWidth: 0, videoHeight: 0, paused: true, ended: false, error: null };
// The leader's events that the followers answer to.
const LEADER_EVENTS = ['play', 'pause', 'seeking', 'seeked', 'ratechange', 'volumechange', 'timeupdate'];

// What is in the player. tiles: [{participant, kind, figure, caption, video, note, url, start}],
// one per participant with media (participant null: the whole recording, from an older
// server) and one per shared screen (kind 'screen');
// leader: the tile whose controls drive the others, once every tile has loaded.
function nothingPlaying() {
  return { id: null, loading: false, error: null, controller: null, tiles: [], leader: null };
}

function finite(x) {
  return Number.isFinite(x) ? x : null;
}

// Which tiles a recording gets: one per participant with media and one per shared screen
// (an older server does not say: the whole recording, in one tile).
function tileSpecs(info) {
  const slots = info && Array.isArray(info.media_participants) && info.media_participants.length ? info.media_participants : [null];
  const screens = slots[0] !== null && Array.isArray(info.media_screens) ? info.media_screens : [];
  return [
    ...slots.map((participant) => ({ participant, kind: 'participant' })),
    ...screens.map((participant) => ({ participant, kind: 'screen' })),
  ];
}

function tileCaption(participant, screen, labelId) {
  const caption = h(`figcaption#${labelId}`);
  const key = `recordings.${screen ? 'screen' : 'participant'}.${participant}`;
  if (has(key)) setText(caption, key);
  else caption.textContent = screen ? `${participant}-screen` : participant;
  return caption;
}

// kind 'participant': their camera and microphone; 'screen': the screen they shared,
// which has no sound, so its tile stays muted. onError: the tile's media failed to play.
function makeTile({ participant, kind }, index, onError) {
  const screen = kind === 'screen';
  const labelId = `recording-tile-label-${index}`;
  const video = h('video', {
    attrs: { playsinline: true, preload: 'auto', 'aria-labelledby': participant ? `recording-player-title ${labelId}` : 'recording-player-title' },
  });
  video.muted = screen;
  const figure = h('figure.player-tile', { dataset: { participant: participant || 'all', kind } });
  const caption = participant ? tileCaption(participant, screen, labelId) : null;
  if (caption) figure.append(caption);
  figure.append(video);
  const note = screen ? null : h('p.tile-note', { i18n: ['recordings.audioOnly'], attrs: { hidden: true } });
  if (note) figure.append(note);
  const tile = { participant, kind, figure, caption, video, note, url: null, start: 0 };
  video.addEventListener('error', () => {
    if (tile.url) onError(); // clearing the source also fires 'error'
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

// One follower does what the leader does: play, pause, seek, rate, volume; moved back
// to the leader's time (now) when it drifted more than DRIFT_S.
function followLeader(tile, lead, now) {
  const v = tile.video;
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
    return;
  }
  if (!run && !v.paused) v.pause();
  const target = Math.min(Math.max(now, tile.start), end);
  if (Math.abs(v.currentTime - target) > DRIFT_S) v.currentTime = target;
}

function follow(tiles, leader) {
  const lead = leader.video;
  if (lead.ended) return; // a participant who stayed longer plays on to their own end
  const now = lead.currentTime;
  for (const tile of tiles) {
    const v = tile.video;
    if (tile === leader || v.readyState < 1 || v.error) continue;
    followLeader(tile, lead, now);
  }
}

function tileSnapshot(tile, leader) {
  const v = tile.video;
  return {
    participant: tile.participant,
    kind: tile.kind,
    leader: tile === leader,
    src: v.src.startsWith('blob:'),
    readyState: v.readyState,
    currentTime: finite(v.currentTime),
    start: tile.start,
    duration: finite(v.duration),
    videoWidth: v.videoWidth,
    videoHeight: v.videoHeight,
    paused: v.paused,
    ended: v.ended,
    muted: v.muted,
    label: tile.caption ? tile.caption.textContent : null,
  };
}

export class RecordingPlayer {
  /**
   * @param {object} el       {section, box, tilesBox, title, status, close}
   * @param {object} list     what the player asks of the list it plays from:
   *   recordingOf(id) -> the listed recording or null; changed() the list should
   *   re-render; closed(id) the player closed on this recording; missing() the
   *   recording is no longer there (re-read the list)
   */
  constructor(el, list) {
    this.el = el;
    this.list = list;
    this.playing = nothingPlaying();
    el.close.addEventListener('click', () => this.close());
  }

  get id() {
    return this.playing.id;
  }

  /** Loading this recording now. */
  isLoading(id) {
    return this.playing.loading && this.playing.id === id;
  }

  setStatus(key, args) {
    const status = this.el.status;
    if (!key) {
      status.textContent = '';
      delete status.dataset.i18n;
      status.hidden = true;
      return;
    }
    setText(status, key, args);
    status.hidden = false;
  }

  setTitle() {
    const r = this.list.recordingOf(this.playing.id);
    if (r && r.started_at) setText(this.el.title, 'recordings.playerTitle', { date: formatDateTime(r.started_at) });
    else setText(this.el.title, 'recordings.playerTitleShort');
  }

  /** The language changed: the title carries a formatted date. */
  retitle() {
    if (this.playing.id) this.setTitle();
  }

  releaseUrls() {
    for (const tile of this.playing.tiles) {
      if (tile.url) URL.revokeObjectURL(tile.url);
      tile.url = null;
    }
  }

  clearTiles() {
    this.releaseUrls();
    for (const tile of this.playing.tiles) {
      tile.video.pause();
      tile.video.removeAttribute('src');
      tile.video.load();
    }
    this.el.tilesBox.replaceChildren();
  }

  lead(tiles, leader) {
    const v = leader.video;
    v.id = 'recording-player';
    v.controls = true;
    const sync = () => {
      if (this.playing.tiles === tiles) follow(tiles, leader);
    };
    for (const name of LEADER_EVENTS) v.addEventListener(name, sync);
    v.addEventListener('playing', () => this.setStatus(null));
  }

  async play(id) {
    if (this.isLoading(id)) return;
    this.el.box.hidden = false;
    this.el.section.hidden = false;
    const { leader, tiles } = this.playing;
    if (this.playing.id === id && leader && !tiles.some((tile) => tile.video.error)) {
      this.replay();
      return;
    }
    const controller = this.begin(id);
    try {
      const ready = await this.load(id, controller);
      if (ready) this.start(ready);
    } catch (err) {
      this.loadFailed(err, controller);
    }
  }

  /** Already loaded: play it again from the start, without fetching (and auditing) again. */
  replay() {
    const video = this.playing.leader.video;
    video.currentTime = 0;
    video.play().catch(() => {});
    video.focus();
  }

  /** Drop whatever was playing and show this recording as loading. */
  begin(id) {
    if (this.playing.controller) this.playing.controller.abort();
    this.clearTiles();
    const controller = new AbortController();
    this.playing = { ...nothingPlaying(), id, loading: true, controller };
    this.setTitle();
    this.setStatus('recordings.loadingMedia');
    this.list.changed();
    this.el.box.scrollIntoView({ block: 'nearest' });
    return controller;
  }

  /** The tiles of a recording with their media loaded; null once another load took over. */
  async load(id, controller) {
    const current = () => this.playing.controller === controller;
    const info = await api.getRecording(id);
    if (!current()) return null;
    const tiles = tileSpecs(info).map((spec, i) => makeTile(spec, i, () => this.setStatus('recordings.playerError')));
    this.playing.tiles = tiles;
    this.el.tilesBox.replaceChildren(...tiles.map((tile) => tile.figure));
    const blobs = await this.fetchMedia(id, tiles, controller);
    if (!current()) return null;
    tiles.forEach((tile, i) => {
      tile.url = URL.createObjectURL(blobs[i]);
      tile.video.src = tile.url;
    });
    await Promise.all(tiles.map((tile) => loaded(tile.video)));
    return current() ? tiles : null;
  }

  /** Every tile's rendition at once; the status shows their summed progress. */
  fetchMedia(id, tiles, controller) {
    const progress = tiles.map(() => [0, 0]);
    const onProgress = (i, got, total) => {
      if (this.playing.controller !== controller) return;
      progress[i] = [got, total];
      const [sumGot, sumTotal] = progress.reduce(([g, n], [a, b]) => [g + a, n + b], [0, 0]);
      if (progress.every(([, n]) => n)) this.setStatus('recordings.loadingPercent', { percent: Math.min(100, Math.round((100 * sumGot) / sumTotal)) });
    };
    return Promise.all(tiles.map((tile, i) => fetchRecordingMedia(id, {
      participant: rendition(tile),
      signal: controller.signal,
      onProgress: (got, total) => onProgress(i, got, total),
    })));
  }

  start(tiles) {
    const playing = this.playing;
    // Where each rendition's media begins on the shared timeline (a late joiner's is later).
    for (const tile of tiles) tile.start = Number.isFinite(tile.video.currentTime) ? tile.video.currentTime : 0;
    playing.leader = pickLeader(tiles);
    playing.loading = false;
    this.lead(tiles, playing.leader);
    this.setStatus(tiles.some((tile) => tile.video.error) ? 'recordings.playerError' : null);
    this.list.changed();
    playing.leader.video.focus();
    const p = playing.leader.video.play();
    // Autoplay can be refused once the click is a while ago: the controls are there.
    if (p && p.catch) p.catch(() => this.setStatus('recordings.pressPlay'));
  }

  loadFailed(err, controller) {
    if (this.playing.controller !== controller || (err && err.name === 'AbortError')) return;
    this.playing.loading = false;
    this.playing.error = { code: err.code || 'unknown', message: err.message || '' };
    this.setStatus('recordings.loadFailed');
    showError(err);
    this.list.changed();
    if (NOT_THERE.has(err.code)) this.list.missing();
  }

  close() {
    if (this.playing.controller) this.playing.controller.abort();
    this.clearTiles();
    const id = this.playing.id;
    this.playing = nothingPlaying();
    this.el.box.hidden = true;
    this.setStatus(null);
    this.list.changed();
    this.list.closed(id);
  }

  snapshot() {
    const playing = this.playing;
    const video = playing.leader ? playing.leader.video : NO_VIDEO;
    const broken = playing.tiles.map((tile) => tile.video.error).find(Boolean);
    const err = broken ? { code: `media_error_${broken.code}`, message: broken.message || '' } : playing.error;
    return {
      src: typeof video.src === 'string' && video.src.startsWith('blob:'),
      recordingId: playing.id,
      loading: playing.loading,
      readyState: video.readyState,
      currentTime: finite(video.currentTime),
      duration: finite(video.duration),
      videoWidth: video.videoWidth,
      videoHeight: video.videoHeight,
      paused: video.paused,
      ended: video.ended,
      error: err || null,
      tiles: playing.tiles.map((tile) => tileSnapshot(tile, playing.leader)),
    };
  }
}
