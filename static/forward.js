// Forwarding (SPEC section 10): a dialog that picks 1..10 of the user's
// rooms and posts a copy of one message in each (files go along without a
// new upload). The copies then arrive like any message.

import { api } from './api.js';
import { $, el, fillAvatar } from './dom.js';
import { isGroup, roomAvatarUser, roomTitle, sortedRooms } from './state.js';
import { quoteNode, quoteOf } from './replies.js';

/** The server takes 1..10 rooms per forward. */
export const MAX_TARGETS = 10;

let hooks = {
  /** The copies the server answered, to show them before their events come. */
  arrived: () => {},
  notice: () => {},
};

const draft = { message: null, chosen: new Set(), busy: false };

export function initForward(value) {
  hooks = { ...hooks, ...value };
  $('forward-form').addEventListener('submit', submitForward);
  $('forward-cancel').addEventListener('click', () => closeForwardDialog());
  $('forward-filter').addEventListener('input', () => renderTargets());
  $('forward-filter').addEventListener('keydown', (event) => {
    // Enter filters; it does not forward.
    if (event.key === 'Enter') event.preventDefault();
  });
  // Escape closes a modal dialog by itself (its `cancel`); nothing stays behind.
  $('forward-dialog').addEventListener('close', () => {
    draft.message = null;
    draft.chosen = new Set();
  });
}

export function isForwardOpen() {
  return $('forward-dialog').open;
}

export function openForwardDialog(message) {
  const dialog = $('forward-dialog');
  draft.message = message;
  draft.chosen = new Set();
  draft.busy = false;
  $('forward-filter').value = '';
  $('forward-preview').replaceChildren(quoteNode(quoteOf(message)));
  setError('');
  renderTargets();
  if (typeof dialog.showModal === 'function') dialog.showModal();
  else dialog.setAttribute('open', '');
  $('forward-filter').focus();
}

export function closeForwardDialog() {
  const dialog = $('forward-dialog');
  if (dialog.open) dialog.close();
}

function setError(text) {
  const node = $('forward-error');
  node.textContent = text;
  node.hidden = !text;
}

/** The rooms matching the filter, most recent first, each with a checkbox. */
function renderTargets() {
  const filter = $('forward-filter').value.trim().toLocaleLowerCase();
  const rooms = sortedRooms().filter((room) => !filter || roomTitle(room).toLocaleLowerCase().includes(filter));
  const list = $('forward-rooms');
  if (rooms.length === 0) {
    list.replaceChildren(el('li', { class: 'pick-note', text: filter ? 'No conversation matches.' : 'No conversations yet.' }));
  } else {
    list.replaceChildren(...rooms.map((room) => targetItem(room)));
  }
  updateChoice();
}

function targetItem(room) {
  const box = el('input', { type: 'checkbox', class: 'forward-check', testid: 'forward-check', value: String(room.id) });
  box.checked = draft.chosen.has(room.id);
  box.addEventListener('change', () => {
    if (box.checked) draft.chosen.add(room.id);
    else draft.chosen.delete(room.id);
    updateChoice();
  });
  const avatar = el('span', { class: `avatar small${isGroup(room) ? ' group' : ''}` });
  fillAvatar(avatar, roomAvatarUser(room));
  return el('li', { class: 'pick-item forward-room', testid: 'forward-room', dataset: { roomId: String(room.id) } },
    el('label', { class: 'forward-label' }, box, avatar,
      el('span', { class: 'pick-body' },
        el('span', { class: 'pick-name', testid: 'forward-room-name', text: roomTitle(room) }),
        el('span', { class: 'pick-email', text: isGroup(room) ? 'Group' : (roomAvatarUser(room).email || '') }))));
}

/** The count, the limit of ten (the other boxes turn off) and the button. */
function updateChoice() {
  const full = draft.chosen.size >= MAX_TARGETS;
  for (const box of $('forward-rooms').querySelectorAll('input[type=checkbox]')) {
    box.disabled = draft.busy || (full && !box.checked);
    box.closest('.forward-room').classList.toggle('chosen', box.checked);
  }
  const n = draft.chosen.size;
  $('forward-count').textContent = n === 0
    ? `Choose up to ${MAX_TARGETS} conversations.`
    : `${n} of at most ${MAX_TARGETS} chosen${full ? ' (the most at once)' : ''}.`;
  $('forward-submit').disabled = draft.busy || n === 0;
}

async function submitForward(event) {
  event.preventDefault();
  const message = draft.message;
  if (draft.busy || !message) return;
  const roomIds = Array.from(draft.chosen);
  if (roomIds.length === 0 || roomIds.length > MAX_TARGETS) {
    setError(`Choose between 1 and ${MAX_TARGETS} conversations.`);
    return;
  }
  setError('');
  draft.busy = true;
  updateChoice();
  try {
    const answer = await api.forward(message.id, roomIds);
    const copies = (answer && answer.messages) || [];
    closeForwardDialog();
    for (const copy of copies) hooks.arrived(copy);
    hooks.notice(`Forwarded to ${roomIds.length} ${roomIds.length === 1 ? 'conversation' : 'conversations'}.`);
  } catch (error) {
    setError(error.message);
  } finally {
    draft.busy = false;
    if (isForwardOpen()) updateChoice();
  }
}
