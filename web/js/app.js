// Page bootstrap shared by the three role pages: translations, header (language toggle,
// signaling state, sign-out), sign-in, /api/me and /api/config, the WebSocket and the
// session view. A page module calls startPage({page, roles, init}).
//
// Shared elements (in every page's HTML):
//   #lang-toggle, #ws-state[data-state], #user-name, #sign-out,
//   #error-banner[data-code] (.error-text, .error-detail, .error-close), #notice,
//   #outage-notice[data-state] (outage.js),
//   #signin, #signin-form, #signin-token, #signin-submit, #signin-reason,
//   #app (the page once signed in), #page-main (lists/forms), #session-view

import { getToken, setToken, clearToken, setSessionSignIn, signedInBySession } from './auth.js';
import { initI18n, toggleLang, onLangChange, setText, getLang } from './i18n.js';
import { api } from './api.js';
import { Signaling } from './signaling.js';
import { SessionView } from './session.js';
import { setHookBase, registerHookSource } from './hook.js';
import { setupOutageNotice, setCallRole, renderOutageNotice, outageSnapshot } from './outage.js';
import { showError, clearError, setupErrorBanner, startWaitingTicker, refreshTimes, setupAnnouncer } from './ui.js';
import { timelineSnapshot } from './timeline.js';

const AUTH_CODES = new Set(['unauthenticated', 'token_expired', 'token_invalid', 'token_revoked']);
const PAGE_FOR_ROLE = { referrer: 'referrer.html', specialist: 'specialist.html', supervisor: 'supervisor.html', admin: 'supervisor.html' };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function setupChrome() {
  try {
    await initI18n();
  } catch (e) {
    document.documentElement.classList.remove('i18n-pending');
    throw e;
  }
  const toggle = document.getElementById('lang-toggle');
  if (toggle) {
    const mark = () => toggle.setAttribute('lang', getLang() === 'en' ? 'ar' : 'en');
    mark();
    toggle.addEventListener('click', () => toggleLang());
    onLangChange(mark);
  }
  onLangChange(() => refreshTimes());
  setupErrorBanner();
  setupAnnouncer();
}

function showSignIn(reason, args) {
  const box = document.getElementById('signin');
  const why = document.getElementById('signin-reason');
  if (reason) {
    setText(why, `signin.reason.${reason}`, args);
    why.hidden = false;
  } else why.hidden = true;
  box.hidden = false;
  const input = document.getElementById('signin-token');
  input.value = '';
  input.focus();
}

function waitForSignIn() {
  return new Promise((resolve) => {
    const form = document.getElementById('signin-form');
    const onSubmit = (ev) => {
      ev.preventDefault();
      let value = document.getElementById('signin-token').value.trim();
      // Accept a whole sign-in link as well as the bare token.
      const m = /[#&]token=([^&\s]+)/.exec(value);
      if (m) value = decodeURIComponent(m[1]);
      if (!value) return;
      form.removeEventListener('submit', onSubmit);
      setToken(value);
      document.getElementById('signin').hidden = true;
      resolve();
    };
    form.addEventListener('submit', onSubmit);
  });
}

// Signed in already through an organisation (the server's session cookie)?
async function sessionSignIn() {
  try {
    const me = await api.me();
    setSessionSignIn(true);
    return me;
  } catch (err) {
    return null;
  }
}

// The organisations one may sign in with, as links to their sign-in pages.
async function showOrganisations() {
  const box = document.getElementById('signin-organisations');
  if (!box || box.dataset.loaded) return;
  box.dataset.loaded = '1';
  let list = [];
  try {
    list = (await api.organisations()).organisations || [];
  } catch (err) {
    return;
  }
  const page = window.location.pathname;
  for (const org of list) {
    const link = document.createElement('a');
    link.className = 'btn btn-primary signin-org';
    link.dataset.organisation = org.organisation;
    link.href = `/auth/login?organisation=${encodeURIComponent(org.organisation)}&next=${encodeURIComponent(page)}`;
    setText(link, 'signin.withOrganisation', { name: org.name });
    box.append(link);
  }
  box.hidden = list.length === 0;
}

async function signIn(roles, pageRole) {
  let reason = null;
  let args;
  for (;;) {
    if (!getToken() && !reason) {
      const me = await sessionSignIn();
      if (me && (!roles || roles.includes(me.role))) return me;
    }
    if (!getToken() || reason) {
      setSessionSignIn(false);
      showOrganisations();
      showSignIn(reason, args);
      await waitForSignIn();
      reason = null;
    }
    try {
      const me = await api.me();
      if (roles && !roles.includes(me.role)) {
        reason = 'wrong_role';
        args = { role: { t: `roles.${me.role}` }, page: { t: `roles.${pageRole}` } };
        const link = document.getElementById('signin-right-page');
        if (link && PAGE_FOR_ROLE[me.role]) {
          link.href = PAGE_FOR_ROLE[me.role];
          setText(link, 'signin.goTo', { role: { t: `roles.${me.role}` } });
          link.hidden = false;
        }
        continue;
      }
      const link = document.getElementById('signin-right-page');
      if (link) link.hidden = true;
      return me;
    } catch (err) {
      if (AUTH_CODES.has(err.code)) {
        clearToken();
        reason = err.code;
        args = undefined;
        continue;
      }
      showError(err);
      await sleep(3000);
    }
  }
}

async function loadConfig() {
  for (;;) {
    try {
      return await api.config();
    } catch (err) {
      showError(err);
      await sleep(3000);
    }
  }
}

function bindWsState(sig) {
  const el = document.getElementById('ws-state');
  const render = () => {
    el.dataset.state = sig.state;
    setText(el.querySelector('.conn-label'), `ws.${sig.state}`);
  };
  sig.addEventListener('state', render);
  render();
}

function showSignedIn(me) {
  const nameEl = document.getElementById('user-name');
  nameEl.textContent = me.name || me.sub;
  nameEl.setAttribute('dir', 'auto');
  nameEl.hidden = false;
  document.getElementById('sign-out').hidden = false;
}

// Signing out revokes the token on the server (every node, every open socket), not
// only here: a token copied elsewhere stops working too.
function bindSignOut(sig) {
  document.getElementById('sign-out').addEventListener('click', async () => {
    sig.close();
    if (signedInBySession()) {
      // Ends the session here and, through the provider's page, there too.
      let next = window.location.pathname;
      try {
        next = (await api.endSession()).redirect || next;
      } catch (err) {
        // The session had ended already.
      }
      setSessionSignIn(false);
      window.location.assign(next);
      return;
    }
    try {
      await api.signOut();
    } catch (err) {
      // Already expired or refused: there is nothing left to revoke.
    }
    clearToken();
    window.location.replace(window.location.pathname);
  });
}

// The token expired or was refused while the page was open: ask for a new one, keep the
// page as it is, and reconnect (a live session rejoins by itself). Someone else signing
// in here gets the page afresh.
async function signInAgain(sig, me, detail) {
  clearToken();
  showError({ code: detail.code || 'token_invalid', message: detail.message });
  showSignIn(detail.code && AUTH_CODES.has(detail.code) ? detail.code : 'token_invalid');
  await waitForSignIn();
  try {
    const again = await api.me();
    if (again.sub !== me.sub) {
      window.location.reload();
      return;
    }
  } catch (err) {
    showError(err);
  }
  clearError();
  sig.connect();
}

/** The session view, and ctx.session / ctx.joinSession to enter it. */
function setupSession(ctx) {
  const pageMain = document.getElementById('page-main');
  const session = new SessionView({
    root: document.getElementById('session-view'),
    signaling: ctx.sig,
    config: ctx.config,
    me: ctx.me,
    onExit: (info) => {
      pageMain.hidden = false;
      document.body.classList.remove('in-session');
      if (ctx.onSessionExit) ctx.onSessionExit(info);
    },
  });
  ctx.session = session;
  /** Join a session and switch the page to the session view. */
  ctx.joinSession = async (sessionId, consult) => {
    if (session.active) {
      if (session.sessionId === sessionId) return;
      showError({ code: 'already_in_session' });
      return;
    }
    pageMain.hidden = true;
    document.body.classList.add('in-session');
    clearError();
    await session.join(sessionId, { consult });
  };
  registerHookSource('session', () => session.snapshot());
  followCallForOutage(session, ctx.page);
}

/** The outage notice says the call continues while the user is in one, and how. */
function followCallForOutage(session, page) {
  setCallRole(() => {
    if (!session.active || session.ended) return null;
    return session.as || (page === 'supervisor' ? 'observer' : 'participant');
  });
  const attributeFilter = ['data-state', 'data-as', 'hidden'];
  new MutationObserver(() => renderOutageNotice()).observe(session.root, { attributes: true, attributeFilter });
}

/**
 * @param {object} o
 * @param {string} o.page    'referrer' | 'specialist' | 'supervisor'
 * @param {string[]} o.roles roles allowed on this page
 * @param {Function} o.init  async (ctx) => void; ctx = {me, config, sig, session, api}
 */
export async function startPage({ page, roles, init }) {
  setHookBase({ page });
  await setupChrome();
  setupOutageNotice(page);
  registerHookSource('outage', outageSnapshot);
  registerHookSource('timeline', () => ({ timeline: timelineSnapshot() }));
  startWaitingTicker();

  const me = await signIn(roles, page);
  clearError();
  setHookBase({ user: me });
  showSignedIn(me);

  const config = await loadConfig();
  const sig = new Signaling();
  setHookBase({ signaling: sig });
  bindWsState(sig);
  bindSignOut(sig);
  sig.addEventListener('auth-failed', (e) => signInAgain(sig, me, e.detail));
  sig.addEventListener('server-error', (e) => {
    // A refused trickled candidate (e.g. after leaving) or tile-size report (racing a
    // reconnect) is nothing a user can act on.
    if (e.detail.about === 'candidate' || e.detail.about === 'view') return;
    showError(e.detail);
  });

  const ctx = { me, config, sig, api, page };
  setupSession(ctx);
  document.getElementById('app').hidden = false;
  await init(ctx);
  sig.connect();
  setHookBase({ ready: true });
  return ctx;
}
