// HTTP API client (docs/protocol.md, "HTTP API"). Every call sends
// Authorization: Bearer <token>; refusals become ApiError(code, message, status).

import { getToken } from './auth.js';

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
  if (!res.ok) {
    const err = data && data.error ? data.error : null;
    if (err && err.code) throw new ApiError(err.code, err.message, res.status, err);
    throw new ApiError(res.status >= 500 ? 'http_server' : 'http_client', `HTTP ${res.status}`, res.status);
  }
  return data;
}

export const api = {
  config: () => request('GET', '/api/config'),
  me: () => request('GET', '/api/me'),
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
  if (!res.ok) {
    let err = null;
    try {
      const data = await res.json();
      err = data && data.error;
    } catch { /* not JSON */ }
    if (err && err.code) throw new ApiError(err.code, err.message, res.status, err);
    throw new ApiError(res.status >= 500 ? 'http_server' : 'http_client', `HTTP ${res.status}`, res.status);
  }
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
