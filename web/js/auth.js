// The sign-in token. It arrives in the URL fragment (#token=…), which browsers never
// send to a server; it is moved to sessionStorage and the address bar is cleared as
// soon as this module is evaluated. It is never put in a URL query and never logged.

const KEY = 'jisr.token';

function takeTokenFromFragment() {
  const hash = window.location.hash;
  if (!hash || hash.length < 2) return;
  const params = new URLSearchParams(hash.slice(1));
  if (!params.has('token')) return;
  const token = (params.get('token') || '').trim();
  params.delete('token');
  const rest = params.toString();
  const url = window.location.pathname + window.location.search + (rest ? `#${rest}` : '');
  window.history.replaceState(window.history.state, '', url);
  if (token) setToken(token);
}

export function getToken() {
  try {
    return sessionStorage.getItem(KEY) || null;
  } catch {
    return memoryToken;
  }
}

let memoryToken = null;
// Signed in through an organisation's sign-in: the server holds the session (an
// HttpOnly cookie the page never sees) and no token is kept here.
let bySession = false;

export function setSessionSignIn(on) {
  bySession = on;
}

export function signedInBySession() {
  return bySession && !getToken();
}

export function setToken(token) {
  memoryToken = token;
  try { sessionStorage.setItem(KEY, token); } catch { /* private mode: memory only */ }
}

export function clearToken() {
  memoryToken = null;
  try { sessionStorage.removeItem(KEY); } catch { /* ignore */ }
}

takeTokenFromFragment();
