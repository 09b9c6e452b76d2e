// Share links (SPEC section 11): a signed link to one file of a message
// that opens without a token, for someone outside the conversation. A
// dialog asks the server for one (a day by default), shows it and copies
// it to the clipboard where the browser allows.

import { api } from './api.js';
import { $ } from './dom.js';

/** Lifetimes offered, in seconds; the server takes 60..604800. */
export const SHARE_TTLS = [3600, 86400, 604800];
const DEFAULT_TTL = 86400;

/** The file being shared ({messageId, index, name}) and a counter that drops late answers. */
let target = null;
let serial = 0;

export function initShare() {
  $('share-close').addEventListener('click', () => closeShareDialog());
  $('share-ttl').addEventListener('change', () => createLink());
  $('share-copy').addEventListener('click', () => copyLink());
  $('share-url').addEventListener('focus', () => $('share-url').select());
  $('share-dialog').addEventListener('close', () => {
    target = null;
    serial += 1;
  });
}

export function isShareOpen() {
  return $('share-dialog').open;
}

export function openShareDialog({ messageId, index, name }) {
  const dialog = $('share-dialog');
  target = { messageId, index, name };
  $('share-name').textContent = name;
  $('share-ttl').value = String(DEFAULT_TTL);
  if (!dialog.open) {
    if (typeof dialog.showModal === 'function') dialog.showModal();
    else dialog.setAttribute('open', '');
  }
  createLink();
}

export function closeShareDialog() {
  const dialog = $('share-dialog');
  if (dialog.open) dialog.close();
}

function setStatus(text, isError = false) {
  const node = $('share-status');
  node.textContent = text;
  node.classList.toggle('error', isError);
}

async function createLink() {
  if (!target) return;
  const mine = ++serial;
  const ttl = Number($('share-ttl').value) || DEFAULT_TTL;
  const input = $('share-url');
  input.value = '';
  $('share-copied').textContent = '';
  $('share-copy').disabled = true;
  setStatus('Creating a link…');
  try {
    const answer = await api.shareFile(target.messageId, target.index, ttl);
    if (mine !== serial) return;
    input.value = answer.url;
    input.dataset.expiresAt = answer.expires_at;
    $('share-copy').disabled = false;
    const until = new Date(answer.expires_at);
    const when = Number.isNaN(until.getTime()) ? '' : ` until ${until.toLocaleString()}`;
    setStatus(`Anyone with this link can open the file${when}.`);
    input.focus();
    await copyLink({ quiet: true });
  } catch (error) {
    if (mine !== serial) return;
    setStatus(`Could not create a link: ${error.message}`, true);
  }
}

/** Copy the link; `quiet` leaves the status alone when the browser refuses (it is selected to copy by hand). */
async function copyLink({ quiet = false } = {}) {
  const input = $('share-url');
  if (!input.value) return;
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
    $('share-copied').textContent = 'Copied to the clipboard.';
  } catch {
    if (!quiet) $('share-copied').textContent = 'Copy the selected link with Ctrl+C.';
  }
}
