// The case packet in the pages: files attached to a consult (ECG as PDF, echo or
// angiography stills as JPEG/PNG, DICOM). The server checks every file's content and
// size and keeps it encrypted; who may read: the referring facility, the accepting
// specialist, supervisors.
//
// Upload (referrer): .attach-button[data-consult-id] opens the chooser of the page's one
//   #attach-input (type=file, multiple; its data-consult-id says for which consult).
//   Each file is the raw body of POST /api/consults/{id}/attachments (Content-Type = the
//   file's type, X-Filename = encodeURIComponent(name), bearer header), one after the
//   other, with progress. Progress and refusals (too_large, unsupported_type,
//   attachments_unavailable, …) show in the consult's card:
//   .upload-status[data-consult-id][data-state=uploading|done|error][data-code]
//   with li.upload-result[data-code] per file.
// List: ul.attachment-list > li.attachment-item[data-attachment-id][data-type]
//   each with .open-attachment[data-attachment-id] (View; DICOM: Download).
// Viewer: dialog#attachment-viewer[data-state=loading|ready|error][data-kind=image|pdf|dicom]
//   #attachment-viewer-title, #attachment-image (img), #attachment-frame (iframe, PDF),
//   #attachment-pdf-fallback (the server's CSP refused the blob: frame: open in a new tab),
//   #attachment-dicom-note, #attachment-download (a[download]), #attachment-open-tab,
//   #attachment-close, #attachment-viewer-error. The file is fetched with the bearer header
//   and shown from a blob: URL (no token in any URL); the URL is revoked on close.
// Hook (registered by setupCasePacket as 'casepacket'): attachments (of the consult in
//   the session, else what the page lists), uploads {consultId: {state, code, filename,
//   pct, results}}, viewer {open, consultId, attachmentId, kind, state, naturalWidth,
//   naturalHeight, error}.

import { t, has, setText } from './i18n.js';
import { ApiError } from './api.js';
import { getToken } from './auth.js';
import { registerHookSource } from './hook.js';
import { h, timeEl } from './ui.js';

export const ACCEPTED_TYPES = ['application/pdf', 'image/jpeg', 'image/png', 'application/dicom'];
const ACCEPT_ATTR = '.pdf,.jpg,.jpeg,.png,.dcm,.dicom,application/pdf,image/jpeg,image/png,application/dicom';
const KIND = { 'application/pdf': 'pdf', 'image/jpeg': 'image', 'image/png': 'image', 'application/dicom': 'dicom' };
const TYPE_LABEL = { 'application/pdf': 'PDF', 'image/jpeg': 'JPEG', 'image/png': 'PNG', 'application/dicom': 'DICOM' };

export const packetEvents = new EventTarget();
const uploads = new Map(); // consult id -> {state, filename, pct, index, total, code, results}
let knownLimit = 0; // bytes, learnt from the server's first too_large refusal
let input = null;
let viewer = null; // {el, ...parts}
let viewing = { open: false, consultId: null, attachmentId: null, kind: null, state: null, error: null, url: null };
let attachmentSource = () => [];

function changed(consultId) {
  packetEvents.dispatchEvent(new CustomEvent('change', { detail: { consultId } }));
}

export function formatSize(bytes) {
  const n = Number(bytes) || 0;
  if (n < 1024) return { t: 'casepacket.bytes', args: { n } };
  if (n < 1024 * 1024) return { t: 'casepacket.kb', args: { n: Math.max(1, Math.round(n / 1024)) } };
  return { t: 'casepacket.mb', args: { n: Number((n / (1024 * 1024)).toFixed(1)) } };
}

function sizeEl(bytes) {
  const s = formatSize(bytes);
  return h('bdi.attachment-size', { i18n: [s.t, s.args] });
}

// ---- upload -----------------------------------------------------------------------

function declaredType(file) {
  const type = (file.type || '').toLowerCase();
  if (type) return type;
  return /\.(dcm|dicom)$/i.test(file.name) ? 'application/dicom' : 'application/octet-stream';
}

function limitFrom(message) {
  const m = /(\d{3,})\s*bytes/.exec(message || '');
  return m ? Number(m[1]) : 0;
}

function uploadOne(consultId, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/api/consults/${encodeURIComponent(consultId)}/attachments`);
    const token = getToken();
    if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.setRequestHeader('Content-Type', declaredType(file));
    xhr.setRequestHeader('X-Filename', encodeURIComponent(file.name || 'attachment'));
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onerror = () => reject(new ApiError('network', 'upload failed', 0));
    xhr.onabort = () => reject(new ApiError('network', 'upload aborted', 0));
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText || 'null'); } catch { data = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else if (data && data.error && data.error.code) reject(new ApiError(data.error.code, data.error.message, xhr.status));
      else if (xhr.status === 413) reject(new ApiError('too_large', '', 413));
      else reject(new ApiError(xhr.status >= 500 ? 'http_server' : 'http_client', `HTTP ${xhr.status}`, xhr.status));
    };
    xhr.send(file);
  });
}

function localRefusal(file) {
  const type = (file.type || '').toLowerCase();
  if (type && type !== 'application/octet-stream' && !ACCEPTED_TYPES.includes(type)) return 'unsupported_type';
  if (knownLimit && file.size > knownLimit) return 'too_large';
  return null;
}

/** Upload files to a consult, one after the other; progress and results in `uploads`. */
export async function uploadFiles(consultId, files) {
  const list = Array.from(files || []);
  if (!list.length) return;
  const up = { state: 'uploading', filename: '', pct: 0, index: 0, total: list.length, code: null, results: [] };
  uploads.set(consultId, up);
  changed(consultId);
  for (const [i, file] of list.entries()) {
    Object.assign(up, { filename: file.name, pct: 0, index: i + 1 });
    changed(consultId);
    const refused = localRefusal(file);
    if (refused) {
      up.results.push({ filename: file.name, ok: false, code: refused, size: file.size });
      continue;
    }
    try {
      const entry = await uploadOne(consultId, file, (p) => {
        up.pct = Math.round(p * 100);
        updateProgress(consultId);
      });
      up.results.push({ filename: file.name, ok: true, id: entry && entry.id, size: file.size });
    } catch (err) {
      if (err.code === 'too_large') knownLimit = limitFrom(err.message) || knownLimit;
      up.results.push({ filename: file.name, ok: false, code: err.code || 'unknown', size: file.size });
      if (['attachments_unavailable', 'forbidden', 'invalid_state', 'consult_not_found'].includes(err.code)) break;
    }
  }
  const failed = up.results.filter((r) => !r.ok);
  up.state = failed.length ? 'error' : 'done';
  up.code = failed.length ? failed[0].code : null;
  up.pct = 100;
  changed(consultId);
  if (!failed.length) {
    setTimeout(() => {
      if (uploads.get(consultId) === up) {
        uploads.delete(consultId);
        changed(consultId);
      }
    }, 8000);
  }
}

function updateProgress(consultId) {
  const up = uploads.get(consultId);
  for (const box of document.querySelectorAll(`.upload-status[data-consult-id="${CSS.escape(consultId)}"]`)) {
    const bar = box.querySelector('progress');
    if (bar) bar.value = up.pct;
    const text = box.querySelector('.upload-text');
    if (text) setText(text, 'casepacket.uploading', { filename: up.filename, i: up.index, n: up.total, pct: up.pct });
  }
}

function ensureInput() {
  if (input) return input;
  input = document.getElementById('attach-input');
  if (!input) {
    input = h('input#attach-input.visually-hidden', { attrs: { type: 'file', multiple: true, accept: ACCEPT_ATTR, tabindex: '-1', 'aria-hidden': 'true' } });
    document.body.append(input);
  }
  input.addEventListener('change', () => {
    const consultId = input.dataset.consultId;
    const files = Array.from(input.files || []);
    input.value = '';
    if (consultId && files.length) uploadFiles(consultId, files);
  });
  return input;
}

/** The "Attach files" button of an open consult (referrer). */
export function attachButton(c) {
  const busy = (uploads.get(c.id) || {}).state === 'uploading';
  return h('button.btn.btn-secondary.btn-large.attach-button', {
    attrs: { type: 'button', disabled: busy, 'aria-describedby': `attach-help-${c.id}` },
    dataset: { consultId: c.id },
    i18n: ['casepacket.attach'],
    on: {
      click: () => {
        const el = ensureInput();
        el.dataset.consultId = c.id;
        el.click();
      },
    },
  });
}

/** Upload progress / results of a consult (null when there is nothing to say). */
export function uploadStatus(c, { help = false, helpId = true } = {}) {
  const up = uploads.get(c.id);
  const parts = [];
  if (help) parts.push(h(`p.field-help.attach-help${helpId ? `#attach-help-${c.id}` : ''}`, { i18n: ['casepacket.help'] }));
  if (!up) return parts.length ? h('div.upload-box', {}, ...parts) : null;
  const box = h('div.upload-status', { dataset: { consultId: c.id, state: up.state, code: up.code || '' }, attrs: { role: up.state === 'error' ? 'alert' : 'status', 'aria-live': 'polite' } });
  if (up.state === 'uploading') {
    box.append(h('span.upload-text', { i18n: ['casepacket.uploading', { filename: up.filename, i: up.index, n: up.total, pct: up.pct }] }),
      h('progress', { attrs: { max: 100, value: up.pct } }));
  }
  const results = up.results.map((r) => h('li.upload-result', { dataset: { code: r.code || 'ok', ok: r.ok ? 'true' : 'false' } },
    h('span', { i18n: [r.ok ? 'casepacket.uploaded' : 'casepacket.refused', { filename: r.filename }] }),
    r.ok ? null : h('strong.upload-reason', { i18n: refusalText(r) })));
  if (results.length) box.append(h('ul.upload-results', {}, ...results));
  if (up.state === 'error') {
    box.append(h('button.btn.btn-ghost.upload-dismiss', { attrs: { type: 'button' }, i18n: ['common.dismiss'], on: { click: () => { uploads.delete(c.id); changed(c.id); } } }));
  }
  parts.push(box);
  return h('div.upload-box', {}, ...parts);
}

function refusalText(r) {
  if (r.code === 'too_large') {
    if (knownLimit) {
      const s = formatSize(knownLimit);
      return ['casepacket.errors.too_large_limit', { limit: { t: s.t, args: s.args } }];
    }
    return ['casepacket.errors.too_large'];
  }
  const key = `casepacket.errors.${r.code}`;
  return [has(key) ? key : 'casepacket.errors.other'];
}

// ---- list -------------------------------------------------------------------------

/** ul.attachment-list of a consult's attachments (null when it has none). */
export function attachmentList(c, { canOpen = true } = {}) {
  const list = (c && c.attachments) || [];
  if (!list.length) return null;
  return h('ul.attachment-list', { attrs: { 'aria-label': t('casepacket.listLabel') } }, ...list.map((a) => attachmentItem(c, a, canOpen)));
}

function attachmentItem(c, a, canOpen) {
  const kind = KIND[a.content_type] || 'file';
  const li = h('li.attachment-item', { dataset: { attachmentId: a.id, type: a.content_type, kind } },
    h(`bdi.badge.file-type.file-${kind}`, { text: TYPE_LABEL[a.content_type] || '?', attrs: { dir: 'ltr' } }),
    h('span.attachment-name', { text: a.filename || 'attachment', attrs: { dir: 'auto' } }),
    sizeEl(a.size));
  if (a.at) li.append(timeEl(a.at));
  if (canOpen) {
    li.append(h('button.btn.btn-primary.open-attachment', {
      attrs: { type: 'button', 'aria-label': t(kind === 'dicom' ? 'casepacket.downloadNamed' : 'casepacket.viewNamed', { filename: a.filename || '' }) },
      dataset: { attachmentId: a.id, consultId: c.id },
      i18n: [kind === 'dicom' ? 'casepacket.download' : 'casepacket.view'],
      on: { click: (e) => openAttachment(c, a, e.currentTarget) },
    }));
  }
  return li;
}

// ---- viewer -----------------------------------------------------------------------

export async function fetchAttachment(consultId, attachmentId) {
  const headers = { Accept: '*/*' };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(`/api/consults/${encodeURIComponent(consultId)}/attachments/${encodeURIComponent(attachmentId)}`, { headers, cache: 'no-store' });
  } catch (e) {
    throw new ApiError('network', String(e && e.message ? e.message : e), 0);
  }
  if (!res.ok) {
    let err = null;
    try { err = (await res.json()).error; } catch { /* not JSON */ }
    if (err && err.code) throw new ApiError(err.code, err.message, res.status);
    throw new ApiError(res.status >= 500 ? 'http_server' : 'http_client', `HTTP ${res.status}`, res.status);
  }
  return res.blob();
}

function buildViewer() {
  if (viewer) return viewer;
  const title = h('h2#attachment-viewer-title', { attrs: { dir: 'auto' } });
  const meta = h('p.viewer-meta');
  const download = h('a#attachment-download.btn.btn-secondary', { attrs: { href: '#', download: '' }, i18n: ['casepacket.download'] });
  const openTab = h('button#attachment-open-tab.btn.btn-secondary', { attrs: { type: 'button' }, i18n: ['casepacket.openTab'], on: { click: () => { if (viewing.url) window.open(viewing.url, '_blank', 'noopener'); } } });
  const close = h('button#attachment-close.btn.btn-primary', { attrs: { type: 'button' }, i18n: ['casepacket.close'], on: { click: () => viewer.el.close() } });
  const status = h('p#attachment-viewer-status.viewer-status', { attrs: { role: 'status', 'aria-live': 'polite' } });
  const error = h('p#attachment-viewer-error.field-error', { attrs: { role: 'alert', hidden: true } });
  const body = h('div.viewer-body');
  const el = h('dialog#attachment-viewer.attachment-viewer', { attrs: { 'aria-labelledby': 'attachment-viewer-title' } },
    h('div.viewer-head', {}, h('div.viewer-titles', {}, title, meta), h('div.viewer-actions', {}, openTab, download, close)),
    status, error, body);
  el.addEventListener('close', () => {
    body.replaceChildren();
    if (viewing.url) URL.revokeObjectURL(viewing.url);
    const opener = viewing.opener;
    viewing = { open: false, consultId: null, attachmentId: null, kind: null, state: null, error: null, url: null };
    el.dataset.state = 'closed';
    if (opener && opener.isConnected) opener.focus();
  });
  document.body.append(el);
  viewer = { el, title, meta, download, openTab, status, error, body };
  return viewer;
}

/** Fetch an attachment (bearer header) and show it: image, PDF, or a DICOM download. */
export async function openAttachment(c, a, opener = null) {
  const v = buildViewer();
  if (v.el.open) v.el.close();
  const kind = KIND[a.content_type] || 'file';
  viewing = { open: true, consultId: c.id, attachmentId: a.id, kind, state: 'loading', error: null, url: null, opener };
  v.el.dataset.state = 'loading';
  v.el.dataset.kind = kind;
  v.title.textContent = a.filename || 'attachment';
  v.meta.replaceChildren(h('span.badge.file-type', { text: TYPE_LABEL[a.content_type] || '?', attrs: { dir: 'ltr' } }), ' ', sizeEl(a.size));
  v.body.replaceChildren();
  v.error.hidden = true;
  v.download.hidden = true;
  v.openTab.hidden = true;
  setText(v.status, 'casepacket.loading');
  v.status.hidden = false;
  v.el.showModal();
  let blob;
  try {
    blob = await fetchAttachment(c.id, a.id);
  } catch (err) {
    if (viewing.attachmentId !== a.id) return;
    viewing.state = 'error';
    viewing.error = err.code;
    v.el.dataset.state = 'error';
    v.status.hidden = true;
    const key = `casepacket.errors.${err.code}`;
    setText(v.error, has(key) ? key : (has(`errors.${err.code}`) ? `errors.${err.code}` : 'casepacket.errors.other'));
    v.error.hidden = false;
    return;
  }
  if (viewing.attachmentId !== a.id || !v.el.open) return;
  const typed = blob.type ? blob : new Blob([blob], { type: a.content_type });
  const url = URL.createObjectURL(typed);
  viewing.url = url;
  v.download.href = url;
  v.download.setAttribute('download', a.filename || 'attachment');
  v.download.hidden = false;
  const ready = () => {
    viewing.state = 'ready';
    v.el.dataset.state = 'ready';
    v.status.hidden = true;
  };
  if (kind === 'image') {
    const img = h('img#attachment-image.viewer-image', { attrs: { alt: a.filename || '' } });
    img.addEventListener('load', ready);
    img.addEventListener('error', () => { viewing.state = 'error'; viewing.error = 'unreadable'; v.el.dataset.state = 'error'; });
    img.addEventListener('click', () => img.classList.toggle('zoomed'));
    img.src = url;
    v.body.append(img, h('p.field-help', { i18n: ['casepacket.zoomHelp'] }));
    v.openTab.hidden = false;
  } else if (kind === 'pdf') {
    // Shown inside the page where the server's Content-Security-Policy allows blob:
    // frames; where it does not (frame-src falls back to 'self'), the browser refuses
    // the frame and the viewer offers the new tab (a top-level blob: page) instead.
    const frame = h('iframe#attachment-frame.viewer-frame', { attrs: { title: a.filename || 'PDF' } });
    const fallback = h('div#attachment-pdf-fallback.viewer-note', { attrs: { hidden: true } },
      h('p', { i18n: ['casepacket.pdfFallback'] }),
      h('button.btn.btn-primary.btn-large', { attrs: { type: 'button' }, i18n: ['casepacket.openTab'], on: { click: () => window.open(url, '_blank', 'noopener') } }));
    const refused = (e) => {
      // Reports name a blob: URL by its scheme only ("blob").
      const blocked = String(e.blockedURI || '');
      if (viewing.url !== url || !/^blob(:|$)/.test(blocked) || !/^(frame|child|default)-src/.test(e.effectiveDirective || e.violatedDirective || '')) return;
      document.removeEventListener('securitypolicyviolation', refused);
      viewing.embedded = false;
      frame.hidden = true;
      fallback.hidden = false;
      ready();
    };
    document.addEventListener('securitypolicyviolation', refused);
    frame.addEventListener('load', () => {
      if (viewing.embedded === null) viewing.embedded = true;
      ready();
    });
    viewing.embedded = null;
    frame.src = url;
    v.body.append(frame, fallback);
    v.openTab.hidden = false;
    setTimeout(() => {
      document.removeEventListener('securitypolicyviolation', refused);
      if (viewing.url === url && viewing.state === 'loading') ready();
    }, 3000);
  } else {
    v.body.append(h('p#attachment-dicom-note.viewer-note', { i18n: ['casepacket.dicomNote'] }));
    ready();
  }
}

export function viewerSnapshot() {
  const img = document.getElementById('attachment-image');
  return {
    open: !!(viewer && viewer.el.open),
    consultId: viewing.consultId,
    attachmentId: viewing.attachmentId,
    kind: viewing.kind,
    state: viewing.state,
    error: viewing.error,
    embedded: viewing.kind === 'pdf' ? viewing.embedded ?? null : null,
    naturalWidth: img && viewing.kind === 'image' ? img.naturalWidth : null,
    naturalHeight: img && viewing.kind === 'image' ? img.naturalHeight : null,
  };
}

/**
 * Register the hook source. `source()` returns the attachments the page shows now
 * (the session's consult while in a session, else the page's consults).
 */
export function setupCasePacket({ source } = {}) {
  if (source) attachmentSource = source;
  ensureInput();
  registerHookSource('casepacket', () => ({
    attachments: (attachmentSource() || []).map((a) => ({
      id: a.id, consult_id: a.consult_id || null, filename: a.filename, content_type: a.content_type, size: a.size,
    })),
    uploads: Object.fromEntries(Array.from(uploads.entries()).map(([id, u]) => [id, {
      state: u.state, code: u.code, filename: u.filename, pct: u.pct,
      results: u.results.map((r) => ({ filename: r.filename, ok: r.ok, code: r.code || null })),
    }])),
    viewer: viewerSnapshot(),
  }));
}
