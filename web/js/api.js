// HTTP API client (docs/protocol.md, "HTTP API"). Every call sends
// Authorization: Bearer <token>; refusals become ApiError(code, message, status).
// Every answer passes through refusalOf(), which tells the outage notice (outage.js).

import { getToken } from './auth.js';
import { noteAnswer } from './outage.js';

export class ApiError extends Error {
  constructor(code, message, status = 0, extra = {}) {
    super(message || code);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
    Object.assign(this, extra);
  }
}

// Server clock minus browser clock, in seconds, from the HTTP Date header. Used for
// waiting times so a wrong clock on a ward PC does not show nonsense.
let clockOffset = 0;

export function serverNow() {
  return Date.now() / 1000 + clockOffset;
}

function noteServerDate(res, sentAt) {
  const header = res.headers.get('Date');
  if (!header) return;
  const server = Date.parse(header) / 1000;
  if (Number.isNaN(server)) return;
  const local = (sentAt + Date.now()) / 2000;
  const offset = server - local;
  // The header has one-second resolution; ignore sub-second differences.
  clockOffset = Math.abs(offset) > 1.5 ? offset : 0;
}

/**
 * The refusal in an HTTP answer as an ApiError, or null when it succeeded. `body` is the
 * parsed JSON (null when there is none); {"error": {code, message}} gives the code.
 */
export function refusalOf(status, body) {
  if (status >= 200 && status < 300) {
    noteAnswer(null);
    return null;
  }
  const err = body && body.error ? body.error : null;
  const refusal = err && err.code
    ? new ApiError(err.code, err.message, status, err)
    : new ApiError(status >= 500 ? 'http_server' : 'http_client', `HTTP ${status}`, status);
  noteAnswer(refusal.code);
  return refusal;
}

export async function request(method, path, body) {
  const headers = { Accept: 'application/json' };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const sentAt = Date.now();
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError('network', String(e && e.message ? e.message : e), 0);
  }
  noteServerDate(res, sentAt);
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  const refusal = refusalOf(res.status, data);
  if (refusal) throw refusal;
  return data;
}

export const api = {
  config: () => request('GET', '/api/config'),
  me: () => request('GET', '/api/me'),
  signOut: () => request('POST', '/api/sign-out', {}),
  organisations: () => request('GET', '/auth/organisations'),
  endSession: () => request('POST', '/auth/logout', {}),
  listConsults: () => request('GET', '/api/consults'),
  getConsult: (id) => request('GET', `/api/consults/${encodeURIComponent(id)}`),
  createConsult: (fields) => request('POST', '/api/consults', fields),
  acceptConsult: (id) => request('POST', `/api/consults/${encodeURIComponent(id)}/accept`, {}),
  cancelConsult: (id) => request('POST', `/api/consults/${encodeURIComponent(id)}/cancel`, {}),
  listSessions: () => request('GET', '/api/sessions'),
  getSession: (id) => request('GET', `/api/sessions/${encodeURIComponent(id)}`),
  endSession: (id) => request('POST', `/api/sessions/${encodeURIComponent(id)}/end`, {}),
  listRecordings: () => request('GET', '/api/recordings'),
  getRecording: (id) => request('GET', `/api/recordings/${encodeURIComponent(id)}`),
};

/**
 * GET /api/recordings/{id}/media as a Blob, with the bearer header (never a token in a
 * URL). `participant` ('referrer', 'specialist'): only that participant's tracks, on the
 * recording's shared timeline. `onProgress(received, total)` is called as bytes arrive
 * (total 0 if unknown).
 */
export async function fetchRecordingMedia(id, { participant = null, signal, onProgress } = {}) {
  const headers = { Accept: 'video/webm' };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    const query = participant ? `?participant=${encodeURIComponent(participant)}` : '';
    res = await fetch(`/api/recordings/${encodeURIComponent(id)}/media${query}`, { headers, cache: 'no-store', signal });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError('network', String(e && e.message ? e.message : e), 0);
  }
  const refusal = refusalOf(res.status, res.ok ? null : await res.json().catch(() => null));
  if (refusal) throw refusal;
  const type = res.headers.get('Content-Type') || 'video/webm';
  const total = Number(res.headers.get('Content-Length')) || 0;
  if (!res.body || !res.body.getReader) return res.blob();
  const reader = res.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.byteLength;
    if (onProgress) onProgress(received, total);
  }
  return new Blob(chunks, { type: type.split(';')[0].trim() || 'video/webm' });
}
