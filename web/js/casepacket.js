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
//   attachments_unavailable, store_unavailable, …) show in the consult's card:
//   .upload-status[data-consult-id][data-state=uploading|done|error][data-code]
//   with li.upload-result[data-code] per file.
// List: ul.attachment-list > li.attachment-item[data-attachment-id][data-type]
//   each with .open-attachment[data-attachment-id] (View; DICOM: Download), which opens
//   dialog#attachment-viewer (attachmentviewer.js).
// Hook (registered by setupCasePacket as 'casepacket'): attachments (of the consult in
//   the session, else what the page lists), uploads {consultId: {state, code, filename,
//   pct, results}}, viewer {open, consultId, attachmentId, kind, state, embedded,
//   naturalWidth, naturalHeight, error} (attachmentviewer.js).

import { t, has, setText } from './i18n.js';
import { ApiError, refusalOf } from './api.js';
import { getToken } from './auth.js';
import { registerHookSource } from './hook.js';
import { h, timeEl } from './ui.js';
import { ACCEPTED_TYPES, ACCEPT_ATTR, fileKind, typeLabel, formatSize, sizeEl } from './filetypes.js';
import { openAttachment, viewerSnapshot } from './attachmentviewer.js';

export const packetEvents = new EventTarget();
const uploads = new Map(); // consult id -> {state, filename, pct, index, total, code, results}
let knownLimit = 0; // bytes, learnt from the server's first too_large refusal
let input = null;
let attachmentSource = () => [];

function changed(consultId) {
  packetEvents.dispatchEvent(new CustomEvent('change', { detail: { consultId } }));
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
      const refusal = refusalOf(xhr.status, data);
      if (!refusal) resolve(data);
      else if (xhr.status === 413 && !(data && data.error)) reject(new ApiError('too_large', '', 413));
      else reject(refusal);
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
      if (['attachments_unavailable', 'forbidden', 'invalid_state', 'consult_not_found', 'store_unavailable'].includes(err.code)) break;
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
  const kind = fileKind(a.content_type);
  const li = h('li.attachment-item', { dataset: { attachmentId: a.id, type: a.content_type, kind } },
    h(`bdi.badge.file-type.file-${kind}`, { text: typeLabel(a.content_type), attrs: { dir: 'ltr' } }),
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
