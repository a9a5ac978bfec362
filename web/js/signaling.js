// WebSocket signaling client (docs/protocol.md, "WebSocket /ws").
//
// Connects to /ws on the page's host (ws: or wss: by page protocol), sends
// {"type":"auth","token":…} first, waits for `welcome`, then:
//   request(type, fields)  -> Promise of the reply (matched by `ref`), rejects with
//                              ApiError(code, message) when the server answers `error`
//   send(type, fields)     -> fire and forget (errors surface as 'server-error' events)
// Events (EventTarget, detail = message): 'state', 'ready' ({user, node, reconnected}),
// 'consult.updated', 'roster', 'session.ended', 'media.state', 'recording.state', 'server-error',
// 'auth-failed' ({code, message}).
// Reconnects with backoff unless the server refused the token (close code 4401).
// Every message received is passed to the outage notice (outage.js).

import { getToken, signedInBySession } from './auth.js';
import { ApiError } from './api.js';
import { noteAnswer } from './outage.js';

const REPLY_TYPE = {
  auth: 'welcome', join: 'joined', offer: 'answer', leave: 'left', ping: 'pong',
  'recording.request': 'recording.ok', 'recording.consent': 'recording.ok', 'recording.stop': 'recording.ok',
};
const REQUEST_TIMEOUT_MS = 15000;
const PING_EVERY_MS = 20000;
const DEAD_AFTER_MS = 45000;

export class Signaling extends EventTarget {
  constructor() {
    super();
    this.state = 'idle'; // idle | connecting | authenticating | ready | reconnecting | auth_failed | closed
    this.user = null;
    this.node = null;
    this.ws = null;
    this.pending = new Map(); // ref -> {type, expect, resolve, reject, timer}
    this.fireRefs = new Map(); // ref -> type, for fire-and-forget messages
    this.seq = 0;
    this.attempt = 0;
    this.everReady = false;
    this.reconnectTimer = null;
    this.pingTimer = null;
    this.lastHeard = 0;
    this.stopped = false;
    this.authError = null;
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state } }));
  }

  get ready() {
    return this.state === 'ready';
  }

  connect() {
    this.stopped = false;
    clearTimeout(this.reconnectTimer);
    const token = getToken();
    if (!token && !signedInBySession()) {
      this.authFailed('unauthenticated', '');
      return;
    }
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${window.location.host}/ws`);
    } catch (e) {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.setState(this.everReady ? 'reconnecting' : 'connecting');
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.setState('authenticating');
      this.lastHeard = Date.now();
      // Signed in through an organisation: the session cookie came with the upgrade.
      this.rawSend(token ? { type: 'auth', token, ref: 'auth', batch: true }
        : { type: 'auth', ref: 'auth', batch: true });
    };
    ws.onmessage = (ev) => {
      if (ws === this.ws) this.onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws === this.ws) this.onSocketClosed(ev);
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  /** One frame from the server. */
  onFrame(data) {
    this.lastHeard = Date.now();
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    // With `batch` the server may send several messages in one frame, as an array.
    for (const one of Array.isArray(msg) ? msg : [msg]) {
      if (one && typeof one === 'object') this.handle(one);
    }
  }

  /** The socket closed: a refused sign-in, a close asked for, or a reconnect. */
  onSocketClosed(ev) {
    this.ws = null;
    this.stopPing();
    this.failPending(new ApiError('disconnected', 'connection closed'));
    if (ev.code === 4401 || this.authError) {
      const err = this.authError || { code: 'token_invalid', message: ev.reason || '' };
      this.authFailed(err.code, err.message);
      return;
    }
    if (this.stopped) {
      this.setState('closed');
      return;
    }
    this.scheduleReconnect();
  }

  authFailed(code, message) {
    this.stopped = true;
    this.setState('auth_failed');
    this.dispatchEvent(new CustomEvent('auth-failed', { detail: { code, message } }));
  }

  scheduleReconnect() {
    if (this.stopped) return;
    this.setState('reconnecting');
    const delay = Math.min(10000, 500 * 2 ** Math.min(this.attempt, 5)) * (0.75 + Math.random() * 0.5);
    this.attempt += 1;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** Drop the socket and connect again at once (used to recover a broken media path). */
  reconnectNow() {
    if (this.stopped) return;
    this.attempt = 0;
    const ws = this.ws;
    this.ws = null;
    this.stopPing();
    this.failPending(new ApiError('disconnected', 'reconnecting'));
    if (ws) {
      try { ws.close(1000, 'reconnect'); } catch { /* ignore */ }
    }
    this.connect();
  }

  close() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.stopPing();
    const ws = this.ws;
    this.ws = null;
    this.failPending(new ApiError('disconnected', 'closed'));
    if (ws) {
      try { ws.close(1000, 'bye'); } catch { /* ignore */ }
    }
    this.setState('closed');
  }

  handle(msg) {
    const type = msg.type;
    noteAnswer(type === 'error' ? msg.code || 'internal' : null);
    if (type === 'welcome') {
      this.user = msg.user || null;
      this.node = msg.node || null;
      this.attempt = 0;
      this.authError = null;
      const reconnected = this.everReady;
      this.everReady = true;
      this.setState('ready');
      this.startPing();
      this.dispatchEvent(new CustomEvent('ready', { detail: { user: this.user, node: this.node, reconnected } }));
      return;
    }
    if (type === 'error' && this.state === 'authenticating') {
      // A refused auth: the server closes the socket (4401) after this.
      if (['token_expired', 'token_invalid', 'token_revoked', 'unauthenticated'].includes(msg.code)) {
        this.authError = { code: msg.code, message: msg.message || '' };
        return;
      }
    }
    const entry = this.matchPending(msg);
    if (entry) {
      this.pending.delete(entry.ref);
      clearTimeout(entry.timer);
      if (type === 'error') entry.reject(new ApiError(msg.code || 'internal', msg.message || '', 0, { node: msg.node }));
      else entry.resolve(msg);
      return;
    }
    if (type === 'error') {
      const about = msg.ref && this.fireRefs.has(msg.ref) ? this.fireRefs.get(msg.ref) : null;
      this.dispatchEvent(new CustomEvent('server-error', { detail: { ...msg, about } }));
      return;
    }
    if (type === 'pong') return;
    this.dispatchEvent(new CustomEvent(type, { detail: msg }));
  }

  matchPending(msg) {
    if (msg.ref && this.pending.has(msg.ref)) return this.pending.get(msg.ref);
    if (msg.ref || msg.type === 'error') return null;
    // A reply without ref: the oldest request waiting for this type of reply.
    for (const entry of this.pending.values()) {
      if (entry.expect === msg.type) return entry;
    }
    return null;
  }

  failPending(err) {
    for (const entry of this.pending.values()) {
      clearTimeout(entry.timer);
      entry.reject(err);
    }
    this.pending.clear();
    this.fireRefs.clear();
  }

  nextRef(type) {
    this.seq += 1;
    return `${type}-${this.seq}`;
  }

  rawSend(obj) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  request(type, fields = {}, { timeout = REQUEST_TIMEOUT_MS } = {}) {
    if (!this.ready) return Promise.reject(new ApiError('not_connected', 'not connected'));
    const ref = this.nextRef(type);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(ref)) reject(new ApiError('timeout', `${type} timed out`));
      }, timeout);
      this.pending.set(ref, { ref, type, expect: REPLY_TYPE[type], resolve, reject, timer });
      if (!this.rawSend({ ...fields, type, ref })) {
        this.pending.delete(ref);
        clearTimeout(timer);
        reject(new ApiError('not_connected', 'not connected'));
      }
    });
  }

  send(type, fields = {}) {
    if (!this.ready) return false;
    const ref = this.nextRef(type);
    this.fireRefs.set(ref, type);
    if (this.fireRefs.size > 200) this.fireRefs.delete(this.fireRefs.keys().next().value);
    return this.rawSend({ ...fields, type, ref });
  }

  startPing() {
    this.stopPing();
    this.pingTimer = setInterval(() => {
      if (!this.ws) return;
      if (Date.now() - this.lastHeard > DEAD_AFTER_MS) {
        this.reconnectNow();
        return;
      }
      this.rawSend({ type: 'ping', ref: this.nextRef('ping') });
    }, PING_EVERY_MS);
  }

  stopPing() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
  }
}
