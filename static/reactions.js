// Reactions (SPEC section 10): the chips under a message (emoji and count,
// marked when one is ours), the picker of common emoji, toggling our own
// reaction over REST, and the `message_reaction` event.

import { api } from './api.js';
import { el } from './dom.js';
import { findMessage, patchMessage, state } from './state.js';

/** What the picker offers: the reactions people reach for most. */
export const COMMON_EMOJI = ['👍', '❤️', '😂', '😮', '😢', '🎉', '🙏', '🔥', '👀', '✅'];
/** The server keeps at most this many different emoji on one message (422 past it). */
const MAX_DIFFERENT = 20;

let hooks = {
  /** A room's messages changed: redraw them if the room is on screen. */
  changed: () => {},
  showError: () => {},
};

/** Reactions being sent, as "message id emoji": a second click waits for the first. */
const inFlight = new Set();
/** The picker was opened by the user just now: its first emoji takes the focus once it is drawn. */
let focusPicker = false;

export function initReactions(value) {
  hooks = { ...hooks, ...value };
  // A click anywhere but the picker or its button closes the picker.
  document.addEventListener('click', (event) => {
    if (state.reactingId === null) return;
    if (event.target.closest('.reaction-picker, [data-testid="react-button"]')) return;
    closePicker();
  });
}

function reactionsOf(message) {
  return Array.isArray(message && message.reactions)
    ? message.reactions.filter((r) => r && typeof r.emoji === 'string' && Number(r.count) > 0)
    : [];
}

/** Open or close the picker of one message. */
export function togglePicker(message) {
  const opening = state.reactingId !== message.id;
  state.reactingId = opening ? message.id : null;
  focusPicker = opening;
  hooks.changed(message.room_id);
}

export function closePicker({ refocus = false } = {}) {
  const id = state.reactingId;
  if (id === null) return;
  state.reactingId = null;
  hooks.changed(state.currentRoomId);
  if (refocus) {
    const button = document.querySelector(`[data-testid="message"][data-id="${id}"] [data-testid="react-button"]`);
    if (button) button.focus();
  }
}

/** Add our reaction, or take it back when it is there already. */
async function toggle(roomId, messageId, emoji) {
  const key = `${messageId} ${emoji}`;
  if (inFlight.has(key)) return;
  const current = reactionsOf(findMessage(roomId, messageId));
  const mine = current.some((r) => r.emoji === emoji && r.me);
  if (!mine && !current.some((r) => r.emoji === emoji) && current.length >= MAX_DIFFERENT) {
    hooks.showError(`A message can have at most ${MAX_DIFFERENT} different reactions.`);
    return;
  }
  inFlight.add(key);
  try {
    const answer = mine ? await api.unreact(messageId, emoji) : await api.react(messageId, emoji);
    setReactions(roomId, messageId, answer && answer.reactions);
  } catch (error) {
    hooks.showError(error.message);
  } finally {
    inFlight.delete(key);
  }
}

function setReactions(roomId, messageId, reactions) {
  if (!Array.isArray(reactions)) return;
  patchMessage(roomId, messageId, { reactions });
  hooks.changed(roomId);
}

/** `message_reaction`: its `reactions` are already rendered for this user. */
export function applyReactionEvent(data) {
  if (typeof data.id !== 'number' || typeof data.room_id !== 'number') return;
  setReactions(data.room_id, data.id, data.reactions);
}

/** A signature of what the chips show, for the message list's keyed update. */
export function reactionsSignature(message) {
  return reactionsOf(message).map((r) => [r.emoji, Number(r.count), Boolean(r.me)]);
}

/** The chips under a message, or null when nobody reacted. */
export function reactionChips(message) {
  const list = reactionsOf(message);
  if (list.length === 0) return null;
  return el('div', { class: 'reactions', testid: 'reactions', role: 'group', 'aria-label': 'Reactions' },
    ...list.map((r) => {
      const count = Number(r.count);
      const label = `${r.emoji} ${count}${r.me ? ', you reacted; click to take it back' : ', click to react too'}`;
      return el('button', {
        type: 'button',
        class: `reaction-chip${r.me ? ' mine' : ''}`,
        testid: 'reaction-chip',
        dataset: { emoji: r.emoji, me: String(Boolean(r.me)) },
        'aria-pressed': String(Boolean(r.me)),
        'aria-label': label,
        title: label,
        onclick: () => toggle(message.room_id, message.id, r.emoji),
      },
      el('span', { class: 'reaction-emoji', 'aria-hidden': 'true', text: r.emoji }),
      el('span', { class: 'reaction-count', testid: 'reaction-count', text: String(count) }));
    }));
}

/** The row of common emoji under a message; arrows move along it, Escape closes it. */
export function reactionPicker(message) {
  const mine = new Set(reactionsOf(message).filter((r) => r.me).map((r) => r.emoji));
  const options = COMMON_EMOJI.map((emoji) => el('button', {
    type: 'button',
    class: `reaction-option${mine.has(emoji) ? ' mine' : ''}`,
    testid: 'reaction-option',
    dataset: { emoji },
    'aria-pressed': String(mine.has(emoji)),
    'aria-label': mine.has(emoji) ? `Take back ${emoji}` : `React with ${emoji}`,
    text: emoji,
    onclick: () => {
      closePicker({ refocus: true });
      toggle(message.room_id, message.id, emoji);
    },
  }));
  const picker = el('div', { class: 'reaction-picker', testid: 'reaction-picker', role: 'toolbar', 'aria-label': 'Pick a reaction' }, ...options);
  picker.addEventListener('keydown', (event) => {
    const at = options.indexOf(document.activeElement);
    if (event.key === 'Escape') {
      event.preventDefault();
      event.stopPropagation();
      closePicker({ refocus: true });
    } else if ((event.key === 'ArrowRight' || event.key === 'ArrowLeft') && at >= 0) {
      event.preventDefault();
      const step = event.key === 'ArrowRight' ? 1 : -1;
      options[(at + step + options.length) % options.length].focus();
    }
  });
  if (focusPicker) {
    focusPicker = false;
    // Once the node is in the document.
    queueMicrotask(() => options[0].focus());
  }
  return picker;
}
