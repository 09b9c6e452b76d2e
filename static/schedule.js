// Scheduled messages (SPEC section 10): the composer's date and time picker,
// the open room's list of messages waiting for their time (with cancel),
// and the `message_scheduled` answer. At its time a scheduled message comes
// back as a plain `new_message` and leaves the list.

import { api } from './api.js';
import { $, el, formatDay, formatTime } from './dom.js';
import { state } from './state.js';

/** The server takes `send_at` at most a year ahead. */
const MAX_AHEAD_MS = 365 * 24 * 60 * 60 * 1000;
/** What the picker offers first: the next full five minutes an hour from now. */
const DEFAULT_AHEAD_MS = 60 * 60 * 1000;
const ROUND_MS = 5 * 60 * 1000;

let hooks = {
  showError: () => {},
};

/** The list of the open room is unfolded. */
let expanded = false;
/** Cancels under way, by item id. */
const cancelling = new Set();
/** What events did to the list while a GET /scheduled was under way: they win over its answer. */
const loads = new Set();

export function initSchedule(value) {
  hooks = { ...hooks, ...value };
  $('schedule-button').addEventListener('click', () => {
    if (isPickerOpen()) closeSchedulePicker();
    else openSchedulePicker();
  });
  $('schedule-close').addEventListener('click', () => {
    closeSchedulePicker();
    $('composer-input').focus();
  });
  $('schedule-input').addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      event.preventDefault();
      event.stopPropagation();
      closeSchedulePicker();
      $('composer-input').focus();
    } else if (event.key === 'Enter') {
      event.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('scheduled-toggle').addEventListener('click', () => {
    expanded = !expanded;
    renderScheduled();
  });
}

// ---------------------------------------------------------------- picker

/** A Date as the value of `<input type="datetime-local">` (local time, seconds). */
function localValue(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`
    + `T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

export function isPickerOpen() {
  return !$('schedule-row').hidden;
}

export function openSchedulePicker() {
  const input = $('schedule-input');
  const now = Date.now();
  input.min = localValue(new Date(now));
  input.max = localValue(new Date(now + MAX_AHEAD_MS));
  const current = input.value ? new Date(input.value).getTime() : NaN;
  if (!(current > now)) input.value = localValue(new Date(Math.ceil((now + DEFAULT_AHEAD_MS) / ROUND_MS) * ROUND_MS));
  $('schedule-row').hidden = false;
  $('schedule-button').setAttribute('aria-expanded', 'true');
  $('schedule-button').classList.add('active');
  $('send-button').textContent = 'Schedule';
  $('send-button').setAttribute('aria-label', 'Schedule message');
  input.focus();
}

export function closeSchedulePicker() {
  $('schedule-row').hidden = true;
  $('schedule-button').setAttribute('aria-expanded', 'false');
  $('schedule-button').classList.remove('active');
  $('send-button').textContent = 'Send';
  $('send-button').setAttribute('aria-label', 'Send');
}

/**
 * The time the composer sends for: null to send now (the picker is
 * closed), else {iso} (RFC 3339 in UTC) or {error} to show.
 */
export function pickedSendAt() {
  if (!isPickerOpen()) return null;
  const value = $('schedule-input').value;
  // A datetime-local value has no offset: it is read as local time.
  const when = value ? new Date(value) : null;
  if (!when || Number.isNaN(when.getTime())) return { error: 'Pick a date and time to send the message at.' };
  const ahead = when.getTime() - Date.now();
  if (ahead <= 0) return { error: 'Pick a time in the future.' };
  if (ahead > MAX_AHEAD_MS) return { error: 'A message can be scheduled at most a year ahead.' };
  return { iso: when.toISOString() };
}

// ------------------------------------------------------------------ list

function noteAdded(id) {
  for (const load of loads) {
    load.gone.delete(id);
    load.added.add(id);
  }
}

function noteGone(id) {
  for (const load of loads) {
    load.added.delete(id);
    load.gone.add(id);
  }
}

/** GET /scheduled: the caller's pending ones. An older server without it leaves the list as it is. */
export async function loadScheduled() {
  const load = { added: new Set(), gone: new Set() };
  loads.add(load);
  const me = state.me;
  try {
    const answer = await api.scheduled();
    if (state.me !== me) return;
    const fresh = new Map();
    for (const item of (answer && answer.scheduled) || []) {
      if (item && typeof item.id === 'number' && !load.gone.has(item.id)) fresh.set(item.id, item);
    }
    for (const id of load.added) if (!fresh.has(id) && state.scheduled.has(id)) fresh.set(id, state.scheduled.get(id));
    state.scheduled = fresh;
    renderScheduled();
  } catch {
    // Kept as it is; events keep it current.
  } finally {
    loads.delete(load);
  }
}

/**
 * `message_scheduled` {id, room_id, send_at, local_temp_id}: the frame has
 * no text, the `pending` message of this tab does; for one from another tab
 * the list is asked for again.
 */
export function onMessageScheduled(data, pending) {
  if (typeof data.id !== 'number' || typeof data.room_id !== 'number') return;
  const known = state.scheduled.get(data.id);
  state.scheduled.set(data.id, {
    id: data.id,
    room_id: data.room_id,
    send_at: data.send_at,
    local_temp_id: data.local_temp_id ?? null,
    message_type: pending ? pending.messageType : known ? known.message_type : 'text',
    content: pending ? pending.content : known ? known.content : '',
  });
  noteAdded(data.id);
  if (pending) expanded = true;
  else if (!known) reloadSoon();
  renderScheduled();
}

let reloadTimer = null;
/** One GET for a run of events (a replay may bring many). */
function reloadSoon() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => {
    reloadTimer = null;
    loadScheduled();
  }, 200);
}

/** A `new_message` of ours: when it is a scheduled one that came due, it leaves the list. */
export function onDelivered(message) {
  if (!message.local_temp_id) return;
  let changed = false;
  for (const [id, item] of state.scheduled) {
    if (item.local_temp_id === message.local_temp_id && item.room_id === message.room_id) {
      state.scheduled.delete(id);
      noteGone(id);
      changed = true;
    }
  }
  if (changed) renderScheduled();
}

async function cancel(item) {
  if (cancelling.has(item.id)) return;
  cancelling.add(item.id);
  renderScheduled();
  try {
    await api.cancelScheduled(item.id);
  } catch (error) {
    // 404: sent or cancelled meanwhile; either way it is no longer waiting.
    if (error.status !== 404) {
      hooks.showError(`Could not cancel: ${error.message}`);
      return;
    }
  } finally {
    cancelling.delete(item.id);
  }
  state.scheduled.delete(item.id);
  noteGone(item.id);
  renderScheduled();
}

/** The text of an item, or what its files are (the list has no file names). */
function itemText(item) {
  const kind = { image: 'Photo', voice: 'Voice message', file: 'File' }[item.message_type];
  if (!kind) return item.content || '';
  return item.content ? `${kind} · ${item.content}` : kind;
}

function when(iso) {
  return `${formatDay(iso)}, ${formatTime(iso)}`;
}

/** The open room's scheduled messages, soonest first, with the ones still on their way to the server. */
export function renderScheduled() {
  const roomId = state.currentRoomId;
  const items = roomId === null ? [] : Array.from(state.scheduled.values())
    .filter((item) => item.room_id === roomId)
    .sort((a, b) => Date.parse(a.send_at) - Date.parse(b.send_at) || a.id - b.id);
  const waiting = roomId === null ? [] : Array.from(state.pending.values())
    .filter((p) => p.sendAt && p.roomId === roomId);
  const total = items.length + waiting.length;
  $('scheduled-box').hidden = total === 0;
  if (total === 0) {
    $('scheduled-list').replaceChildren();
    return;
  }
  const toggle = $('scheduled-toggle');
  toggle.setAttribute('aria-expanded', String(expanded));
  $('scheduled-count').textContent = `${total} scheduled ${total === 1 ? 'message' : 'messages'}`;
  const list = $('scheduled-list');
  list.hidden = !expanded;
  list.replaceChildren(
    ...items.map((item) => el('li', {
      class: 'scheduled-item',
      testid: 'scheduled-item',
      dataset: { id: String(item.id), tempId: item.local_temp_id || '' },
    },
    el('time', { class: 'scheduled-time', testid: 'scheduled-time', datetime: item.send_at, text: when(item.send_at) }),
    el('span', { class: 'scheduled-text', testid: 'scheduled-text', text: itemText(item) }),
    el('button', {
      type: 'button',
      class: 'ghost small',
      testid: 'scheduled-cancel',
      'aria-label': `Cancel the message scheduled for ${when(item.send_at)}`,
      disabled: cancelling.has(item.id),
      text: cancelling.has(item.id) ? 'Cancelling…' : 'Cancel',
      onclick: () => cancel(item),
    }))),
    ...waiting.map((p) => el('li', { class: 'scheduled-item waiting', testid: 'scheduled-item', dataset: { tempId: p.tempId, pending: 'true' } },
      el('time', { class: 'scheduled-time', datetime: p.sendAt, text: when(p.sendAt) }),
      el('span', { class: 'scheduled-text', testid: 'scheduled-text', text: itemText({ message_type: p.messageType, content: p.content }) }),
      el('span', { class: 'scheduled-state muted', text: p.stage === 'uploading' ? 'Uploading…' : 'Scheduling…' }))),
  );
}
