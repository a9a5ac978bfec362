// The case packet's viewer (casepacket.js lists the files and opens them here): the file
// is fetched with the bearer header and shown from a blob: URL (no token in any URL);
// the URL is revoked on close.
//
// Elements: dialog#attachment-viewer[data-state=loading|ready|error][data-kind=image|pdf|dicom]
//   #attachment-viewer-title, #attachment-image (img), #attachment-frame (iframe, PDF),
//   #attachment-pdf-fallback (the server's CSP refused the blob: frame: open in a new tab),
//   #attachment-dicom-note, #attachment-download (a[download]), #attachment-open-tab,
//   #attachment-close, #attachment-viewer-error.
// Hook (through casepacket.js): viewer {open, consultId, attachmentId, kind, state,
//   embedded, naturalWidth, naturalHeight, error}.

import { has, setText } from './i18n.js';
import { ApiError, refusalOf } from './api.js';
import { getToken } from './auth.js';
import { h } from './ui.js';
import { fileKind, typeLabel, sizeEl } from './filetypes.js';

// How long a PDF frame may stay silent before it is taken as shown.
const PDF_SETTLE_MS = 3000;

let viewer = null; // {el, ...parts}
let viewing = nothingViewed();

function nothingViewed() {
  return { open: false, consultId: null, attachmentId: null, kind: null, state: null, error: null, url: null };
}

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
  const refusal = refusalOf(res.status, res.ok ? null : await res.json().catch(() => null));
  if (refusal) throw refusal;
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
    viewing = nothingViewed();
    el.dataset.state = 'closed';
    if (opener && opener.isConnected) opener.focus();
  });
  document.body.append(el);
  viewer = { el, title, meta, download, openTab, status, error, body };
  return viewer;
}

// ---- the viewer's states ----------------------------------------------------------

function showLoading(v, a, kind) {
  v.el.dataset.state = 'loading';
  v.el.dataset.kind = kind;
  v.title.textContent = a.filename || 'attachment';
  v.meta.replaceChildren(h('span.badge.file-type', { text: typeLabel(a.content_type), attrs: { dir: 'ltr' } }), ' ', sizeEl(a.size));
  v.body.replaceChildren();
  v.error.hidden = true;
  v.download.hidden = true;
  v.openTab.hidden = true;
  setText(v.status, 'casepacket.loading');
  v.status.hidden = false;
  v.el.showModal();
}

function showFetchError(v, err) {
  viewing.state = 'error';
  viewing.error = err.code;
  v.el.dataset.state = 'error';
  v.status.hidden = true;
  const key = `casepacket.errors.${err.code}`;
  setText(v.error, has(key) ? key : (has(`errors.${err.code}`) ? `errors.${err.code}` : 'casepacket.errors.other'));
  v.error.hidden = false;
}

function markReady(v) {
  viewing.state = 'ready';
  v.el.dataset.state = 'ready';
  v.status.hidden = true;
}

/** The fetched file as a blob: URL, offered for download; returns the URL. */
function offerDownload(v, a, blob) {
  const typed = blob.type ? blob : new Blob([blob], { type: a.content_type });
  const url = URL.createObjectURL(typed);
  viewing.url = url;
  v.download.href = url;
  v.download.setAttribute('download', a.filename || 'attachment');
  v.download.hidden = false;
  return url;
}

function showImage(v, a, url) {
  const img = h('img#attachment-image.viewer-image', { attrs: { alt: a.filename || '' } });
  img.addEventListener('load', () => markReady(v));
  img.addEventListener('error', () => { viewing.state = 'error'; viewing.error = 'unreadable'; v.el.dataset.state = 'error'; });
  img.addEventListener('click', () => img.classList.toggle('zoomed'));
  img.src = url;
  v.body.append(img, h('p.field-help', { i18n: ['casepacket.zoomHelp'] }));
  v.openTab.hidden = false;
}

// Shown inside the page where the server's Content-Security-Policy allows blob: frames;
// where it does not (frame-src falls back to 'self'), the browser refuses the frame and
// the viewer offers the new tab (a top-level blob: page) instead.
function showPdf(v, a, url) {
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
    markReady(v);
  };
  document.addEventListener('securitypolicyviolation', refused);
  frame.addEventListener('load', () => {
    if (viewing.embedded === null) viewing.embedded = true;
    markReady(v);
  });
  viewing.embedded = null;
  frame.src = url;
  v.body.append(frame, fallback);
  v.openTab.hidden = false;
  setTimeout(() => {
    document.removeEventListener('securitypolicyviolation', refused);
    if (viewing.url === url && viewing.state === 'loading') markReady(v);
  }, PDF_SETTLE_MS);
}

/** Fetch an attachment (bearer header) and show it: image, PDF, or a DICOM download. */
export async function openAttachment(c, a, opener = null) {
  const v = buildViewer();
  if (v.el.open) v.el.close();
  const kind = fileKind(a.content_type);
  viewing = { open: true, consultId: c.id, attachmentId: a.id, kind, state: 'loading', error: null, url: null, opener };
  showLoading(v, a, kind);
  let blob;
  try {
    blob = await fetchAttachment(c.id, a.id);
  } catch (err) {
    if (viewing.attachmentId === a.id) showFetchError(v, err);
    return;
  }
  if (viewing.attachmentId !== a.id || !v.el.open) return;
  const url = offerDownload(v, a, blob);
  if (kind === 'image') showImage(v, a, url);
  else if (kind === 'pdf') showPdf(v, a, url);
  else {
    v.body.append(h('p#attachment-dicom-note.viewer-note', { i18n: ['casepacket.dicomNote'] }));
    markReady(v);
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
