// The file types a case packet accepts (casepacket.js), and how a file's type and size
// are shown in the list and the viewer (attachmentviewer.js).

import { h } from './ui.js';

export const ACCEPTED_TYPES = ['application/pdf', 'image/jpeg', 'image/png', 'application/dicom'];
// The file chooser's accept attribute: extensions as well as types, since a browser
// often gives a DICOM file no type.
export const ACCEPT_ATTR = '.pdf,.jpg,.jpeg,.png,.dcm,.dicom,application/pdf,image/jpeg,image/png,application/dicom';
const KIND = { 'application/pdf': 'pdf', 'image/jpeg': 'image', 'image/png': 'image', 'application/dicom': 'dicom' };
const TYPE_LABEL = { 'application/pdf': 'PDF', 'image/jpeg': 'JPEG', 'image/png': 'PNG', 'application/dicom': 'DICOM' };

/** How a file is shown: 'image', 'pdf', 'dicom' (downloaded) or 'file'. */
export function fileKind(contentType) {
  return KIND[contentType] || 'file';
}

/** The short type name on a file's badge ('?' for an unknown type). */
export function typeLabel(contentType) {
  return TYPE_LABEL[contentType] || '?';
}

export function formatSize(bytes) {
  const n = Number(bytes) || 0;
  if (n < 1024) return { t: 'casepacket.bytes', args: { n } };
  if (n < 1024 * 1024) return { t: 'casepacket.kb', args: { n: Math.max(1, Math.round(n / 1024)) } };
  return { t: 'casepacket.mb', args: { n: Number((n / (1024 * 1024)).toFixed(1)) } };
}

export function sizeEl(bytes) {
  const s = formatSize(bytes);
  return h('bdi.attachment-size', { i18n: [s.t, s.args] });
}
