// The full image of a message in a modal dialog (SPEC section 11: the list
// shows thumbnails). Escape, the Close button or a click beside the image
// close it and focus goes back where it was; the image can also be opened
// in a tab of its own or shared from here.

import { $ } from './dom.js';
import { openShareDialog } from './share.js';

/** What is shown: {messageId, index, name}, or null. */
let shown = null;

export function initLightbox() {
  const dialog = $('lightbox');
  $('lightbox-close').addEventListener('click', () => closeLightbox());
  $('lightbox-share').addEventListener('click', () => {
    if (shown) openShareDialog(shown);
  });
  // A click on the backdrop (the dialog itself, not its content) closes.
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) closeLightbox();
  });
  dialog.addEventListener('close', () => {
    shown = null;
    $('lightbox-image').removeAttribute('src');
  });
}

export function isLightboxOpen() {
  return $('lightbox').open;
}

/** Show `url` (the full image) of file `index` of `message`. */
export function openLightbox({ message, index, url, name }) {
  const dialog = $('lightbox');
  shown = { messageId: message.id, index, name };
  const image = $('lightbox-image');
  image.alt = name;
  image.src = url;
  $('lightbox-name').textContent = name;
  $('lightbox-original').href = url;
  dialog.setAttribute('aria-label', name);
  if (!dialog.open) {
    if (typeof dialog.showModal === 'function') dialog.showModal();
    else dialog.setAttribute('open', '');
  }
  $('lightbox-close').focus();
}

export function closeLightbox() {
  const dialog = $('lightbox');
  if (dialog.open) dialog.close();
}
