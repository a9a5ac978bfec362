// Text chat in the session view, for participants and observers alike (WebSocket `chat`
// {text} -> `chat` {session_id, from, text, at} to everyone in the session, and
// `chat.ok` to the sender). The server keeps no history: a page shows what arrived
// while it was in the session.
//
// Elements (built here, placed in the session view by sessionpanels.js):
//   section#chat[data-session-id][data-state=open|ended]
//   ol#chat-log (role=log) > li.chat-line[data-from][data-role][data-as][data-mine]
//     with .chat-name, .chat-role, time, .chat-text
//   form#chat-form: textarea#chat-input (Enter sends, Shift+Enter: new line),
//   button#chat-send, #chat-error, #chat-count
// Hook (via sessionpanels.js): chat {sessionId, messages: [{from, name, role, as, text,
//   at, mine}] (last 30), sending, error}.

import { setText, setAttr, onLangChange } from './i18n.js';
import { h, timeEl } from './ui.js';

const MAX_KEEP = 300;
const MAX_LEN = 2000;

export class ChatPanel {
  /** @param {object} ctx startPage's context (sig, me) */
  constructor(ctx) {
    this.ctx = ctx;
    this.sessionId = null;
    this.messages = [];
    this.sending = false;
    this.error = null;
    this.ended = false;
    this.build();
    ctx.sig.addEventListener('chat', (e) => this.receive(e.detail));
    onLangChange(() => this.renderCount());
  }

  build() {
    this.log = h('ol#chat-log.chat-log', { attrs: { role: 'log', 'aria-live': 'polite', 'aria-labelledby': 'chat-title', tabindex: '0' } });
    this.empty = h('p.chat-empty', { i18n: ['chat.empty'] });
    this.input = h('textarea#chat-input.chat-input', {
      attrs: { rows: 2, maxlength: MAX_LEN, dir: 'auto', 'aria-labelledby': 'chat-title', 'aria-describedby': 'chat-help chat-error' },
      i18nAttrs: { placeholder: 'chat.placeholder' },
    });
    this.send = h('button#chat-send.btn.btn-primary', { attrs: { type: 'submit' }, i18n: ['chat.send'] });
    this.errorEl = h('p#chat-error.field-error', { attrs: { hidden: true, role: 'alert' } });
    this.count = h('span#chat-count.chat-count', { attrs: { 'aria-live': 'off' } });
    this.form = h('form#chat-form.chat-form', { attrs: { novalidate: true } },
      this.input, h('div.chat-form-row', {}, this.count, this.send));
    this.form.addEventListener('submit', (e) => { e.preventDefault(); this.submit(); });
    this.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.submit();
      }
    });
    this.input.addEventListener('input', () => { this.setError(null); this.renderCount(); });
    this.el = h('section#chat.chat-panel', { dataset: { state: 'open' }, attrs: { 'aria-labelledby': 'chat-title' } },
      h('h2#chat-title.chat-title', { i18n: ['chat.title'] }),
      h('p#chat-help.chat-help', { i18n: ['chat.help'] }),
      this.log, this.empty, this.form, this.errorEl);
    this.renderCount();
  }

  /** Follow the session the view shows (a new session starts an empty log). */
  setSession(sessionId, { ended = false } = {}) {
    if (sessionId !== this.sessionId) {
      this.sessionId = sessionId;
      this.messages = [];
      this.log.replaceChildren();
      this.setError(null);
      this.input.value = '';
    }
    this.el.dataset.sessionId = sessionId || '';
    this.setEnded(ended);
    this.empty.hidden = this.messages.length > 0;
  }

  setEnded(ended) {
    this.ended = !!ended;
    this.el.dataset.state = this.ended ? 'ended' : 'open';
    this.input.disabled = this.ended;
    this.send.disabled = this.ended || this.sending;
    setAttr(this.input, 'placeholder', this.ended ? 'chat.closed' : 'chat.placeholder');
  }

  receive(msg) {
    if (!msg || !this.sessionId || msg.session_id !== this.sessionId) return;
    const from = msg.from || {};
    const line = {
      from: from.sub || null, name: from.name || from.sub || '', role: from.role || null, as: from.as || null,
      text: String(msg.text || ''), at: msg.at || Date.now() / 1000, mine: from.sub === this.ctx.me.sub,
    };
    this.messages.push(line);
    if (this.messages.length > MAX_KEEP) {
      this.messages.shift();
      if (this.log.firstChild) this.log.firstChild.remove();
    }
    const nearBottom = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 40;
    this.log.append(this.lineEl(line));
    this.empty.hidden = true;
    if (nearBottom || line.mine) this.log.scrollTop = this.log.scrollHeight;
  }

  lineEl(m) {
    const role = m.as === 'observer' ? 'observer' : (m.role || 'referrer');
    return h(`li.chat-line.chat-${role}${m.mine ? '.mine' : ''}`, { dataset: { from: m.from || '', role: m.role || '', as: m.as || '', mine: m.mine ? 'true' : 'false' } },
      h('div.chat-meta', {},
        h('span.chat-name', { text: m.name, attrs: { dir: 'auto' } }),
        h('span.chat-role', { i18n: [m.as === 'observer' ? 'session.observing' : `roles.${m.role || 'referrer'}`] }),
        timeEl(m.at)),
      h('p.chat-text', { text: m.text, attrs: { dir: 'auto' } }));
  }

  renderCount() {
    const n = this.input.value.length;
    this.count.hidden = n < MAX_LEN - 200;
    setText(this.count, 'chat.count', { n, max: MAX_LEN });
  }

  setError(key) {
    this.error = key;
    if (!key) {
      this.errorEl.hidden = true;
      return;
    }
    setText(this.errorEl, key);
    this.errorEl.hidden = false;
  }

  async submit() {
    const text = this.input.value.trim();
    if (!text || this.sending || this.ended || !this.sessionId) return;
    if (!this.ctx.sig.ready) {
      this.setError('chat.notConnected');
      return;
    }
    this.sending = true;
    this.send.disabled = true;
    this.send.setAttribute('aria-busy', 'true');
    try {
      await this.ctx.sig.request('chat', { text }, { timeout: 10000 });
      // Our own line arrives with everyone else's (the server broadcasts it to us too).
      if (this.input.value.trim() === text) this.input.value = '';
      this.setError(null);
      this.renderCount();
    } catch (err) {
      const code = err && err.code;
      this.setError(code === 'not_joined' ? 'chat.notJoined' : code === 'too_large' || code === 'bad_request' ? 'chat.tooLong' : 'chat.notSent');
    } finally {
      this.sending = false;
      this.send.disabled = this.ended;
      this.send.removeAttribute('aria-busy');
      if (!this.ended) this.input.focus();
    }
  }

  snapshot() {
    return {
      sessionId: this.sessionId,
      messages: this.messages.slice(-30).map((m) => ({ ...m })),
      sending: this.sending,
      error: this.error,
      ended: this.ended,
    };
  }
}
