// Translations: every user-visible string comes from web/i18n/<lang>.json.
//
// Static markup carries the key in attributes and is (re)translated by apply():
//   data-i18n="key"                -> textContent
//   data-i18n-args='{"n": 3}'      -> {n} placeholders; a value {"t": "other.key"} is
//                                     itself translated at apply time
//   data-i18n-placeholder / data-i18n-title / data-i18n-aria-label -> attributes
// Dynamic code uses t(key, args) or setText(el, key, args) (which keeps the key on the
// element so a language switch re-translates it without re-rendering).

const SUPPORTED = ['en', 'ar'];
const RTL = new Set(['ar']);
const STORAGE_KEY = 'jisr.lang';

let lang = 'en';
let dict = {};
let fallback = {};
const listeners = new Set();

function lookup(d, key) {
  let node = d;
  for (const part of key.split('.')) {
    if (node === null || typeof node !== 'object') return undefined;
    node = node[part];
  }
  return node;
}

async function load(code) {
  const res = await fetch(`i18n/${code}.json`, { cache: 'no-cache' });
  if (!res.ok) throw new Error(`translations ${code}: HTTP ${res.status}`);
  return res.json();
}

function storedLang() {
  try {
    const v = localStorage.getItem(STORAGE_KEY);
    if (SUPPORTED.includes(v)) return v;
  } catch { /* storage may be disabled */ }
  const nav = (navigator.language || '').toLowerCase();
  return nav.startsWith('ar') ? 'ar' : 'en';
}

export async function initI18n() {
  lang = storedLang();
  // Set direction first so the layout does not jump once strings arrive.
  document.documentElement.lang = lang;
  document.documentElement.dir = RTL.has(lang) ? 'rtl' : 'ltr';
  fallback = await load('en');
  dict = lang === 'en' ? fallback : await load(lang).catch(() => fallback);
  apply(document);
  document.documentElement.classList.remove('i18n-pending');
}

export function getLang() {
  return lang;
}

export function isRtl() {
  return RTL.has(lang);
}

export async function setLang(code) {
  if (!SUPPORTED.includes(code) || code === lang) return;
  const next = code === 'en' ? fallback : await load(code);
  lang = code;
  dict = next;
  try { localStorage.setItem(STORAGE_KEY, code); } catch { /* ignore */ }
  apply(document);
  for (const fn of listeners) {
    try { fn(lang); } catch (e) { console.error(e); }
  }
}

export function toggleLang() {
  return setLang(lang === 'en' ? 'ar' : 'en');
}

export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function has(key) {
  return typeof lookup(dict, key) === 'string' || typeof lookup(fallback, key) === 'string';
}

function resolveArgs(args) {
  if (!args) return args;
  const out = {};
  for (const [k, v] of Object.entries(args)) {
    if (v !== null && typeof v === 'object' && typeof v.t === 'string') out[k] = t(v.t, v.args);
    // Names and other user text: isolate their direction (Latin names in Arabic text).
    else if (typeof v === 'string' && v) out[k] = `\u2068${v}\u2069`;
    else out[k] = v;
  }
  return out;
}

export function t(key, args) {
  let s = lookup(dict, key);
  if (typeof s !== 'string') s = lookup(fallback, key);
  if (typeof s !== 'string') return key;
  if (!args) return s;
  const a = resolveArgs(args);
  return s.replace(/\{(\w+)\}/g, (m, k) => (k in a && a[k] !== undefined && a[k] !== null ? String(a[k]) : m));
}

/** Set an element's text from a key and remember the key for language switches. */
export function setText(el, key, args) {
  el.dataset.i18n = key;
  if (args) el.dataset.i18nArgs = JSON.stringify(args);
  else delete el.dataset.i18nArgs;
  el.textContent = t(key, args);
  return el;
}

/** Set a translated attribute (placeholder, title, aria-label) on an element. */
export function setAttr(el, attr, key, args) {
  const camel = attr.replace(/-(\w)/g, (_, c) => c.toUpperCase());
  el.dataset[`i18n${camel[0].toUpperCase()}${camel.slice(1)}`] = key;
  el.setAttribute(attr, t(key, args));
  return el;
}

export function apply(root = document) {
  if (root === document) {
    document.documentElement.lang = lang;
    document.documentElement.dir = RTL.has(lang) ? 'rtl' : 'ltr';
  }
  const scope = root.querySelectorAll ? root : document;
  const all = (sel) => {
    const list = Array.from(scope.querySelectorAll(sel));
    if (root !== document && root.matches && root.matches(sel)) list.unshift(root);
    return list;
  };
  for (const el of all('[data-i18n]')) {
    let args;
    if (el.dataset.i18nArgs) {
      try { args = JSON.parse(el.dataset.i18nArgs); } catch { args = undefined; }
    }
    el.textContent = t(el.dataset.i18n, args);
  }
  for (const [data, attr] of [
    ['i18nPlaceholder', 'placeholder'],
    ['i18nTitle', 'title'],
    ['i18nAriaLabel', 'aria-label'],
  ]) {
    const sel = `[data-${data.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}]`;
    for (const el of all(sel)) el.setAttribute(attr, t(el.dataset[data]));
  }
}

/** Numbers and clock times. Latin digits in both languages (clinical clarity, ids). */
export function formatTime(epochSeconds) {
  const locale = lang === 'ar' ? 'ar-u-nu-latn' : 'en-GB';
  return new Intl.DateTimeFormat(locale, { hour: '2-digit', minute: '2-digit' })
    .format(new Date(epochSeconds * 1000));
}

/** Date and clock time (recordings), Latin digits in both languages. */
export function formatDateTime(epochSeconds) {
  const locale = lang === 'ar' ? 'ar-u-nu-latn' : 'en-GB';
  return new Intl.DateTimeFormat(locale, {
    day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit',
  }).format(new Date(epochSeconds * 1000));
}
