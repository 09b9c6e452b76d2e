// Replies (SPEC section 10): the quote bar above the composer while an
// answer is written (one per room, kept while switching), and the quote
// that a replying message shows above its text.

import { $, el } from './dom.js';
import { state } from './state.js';

/** As the server cuts `preview`: the first 100 characters (code points). */
const PREVIEW_CHARS = 100;

let hooks = {
  /** Scroll to a message of the open room and highlight it. */
  jumpTo: () => {},
};

export function initReplies(value) {
  hooks = { ...hooks, ...value };
  $('reply-cancel').addEventListener('click', () => {
    cancelReply();
    $('composer-input').focus();
  });
}

/** The `reply_to` object the server gives for `message` as it is now. */
export function quoteOf(message) {
  const sender = message.sender_details || {};
  const deleted = Boolean(message.is_deleted);
  return {
    id: message.id,
    sender_id: sender.id ?? null,
    sender_name: sender.name || 'Someone',
    message_type: message.message_type,
    preview: deleted ? '' : Array.from(message.content || '').slice(0, PREVIEW_CHARS).join(''),
    is_deleted: deleted,
  };
}

/** What a quote says: the text, or what kind of message it was. */
export function quoteText(reply) {
  if (reply.is_deleted) return 'Deleted message';
  if (reply.preview) return reply.preview;
  return { image: 'Photo', voice: 'Voice message', file: 'File' }[reply.message_type] || 'Message';
}

export function replyFor(roomId) {
  return state.replyTo.get(roomId) || null;
}

export function startReply(message) {
  state.replyTo.set(message.room_id, quoteOf(message));
  renderReplyBar();
  $('composer-input').focus();
}

export function cancelReply(roomId = state.currentRoomId) {
  if (roomId === null || !state.replyTo.delete(roomId)) return false;
  renderReplyBar();
  return true;
}

/** The bar above the composer, for the room on screen. */
export function renderReplyBar() {
  const reply = state.currentRoomId === null ? null : replyFor(state.currentRoomId);
  $('reply-bar').hidden = !reply;
  if (!reply) return;
  $('reply-bar-name').textContent = `Replying to ${reply.sender_name}`;
  $('reply-bar-text').textContent = quoteText(reply);
}

/**
 * The quote above a replying message: a button that shows the original,
 * or plain when `roomId` is left out (a message still being sent).
 */
export function quoteNode(reply, roomId) {
  const parts = [
    el('span', { class: 'quote-name', testid: 'reply-quote-name', text: reply.sender_name || 'Someone' }),
    el('span', { class: 'quote-text', testid: 'reply-quote-text', text: quoteText(reply) }),
  ];
  const className = `quote${reply.is_deleted ? ' deleted' : ''}`;
  if (roomId === undefined) return el('div', { class: className, testid: 'reply-quote' }, ...parts);
  return el('button', {
    type: 'button',
    class: className,
    testid: 'reply-quote',
    dataset: { replyId: String(reply.id) },
    'aria-label': `Show the message of ${reply.sender_name || 'someone'} that this answers`,
    onclick: () => hooks.jumpTo(roomId, reply.id),
  }, ...parts);
}

/**
 * A message was edited or deleted: the quotes of it, in its conversation
 * and in the composer's bar, follow (the server renders them from the
 * message as it is now, too).
 */
export function refreshQuotes(roomId, messageId, change) {
  const update = (reply) => ({
    ...reply,
    ...(change.is_deleted
      ? { preview: '', is_deleted: true }
      : { preview: Array.from(change.content || '').slice(0, PREVIEW_CHARS).join('') }),
  });
  const conv = state.convs.get(roomId);
  if (conv) {
    for (const message of conv.messages.values()) {
      if (message.reply_to && message.reply_to.id === messageId) {
        conv.messages.set(message.id, { ...message, reply_to: update(message.reply_to) });
      }
    }
  }
  const pending = state.replyTo.get(roomId);
  if (pending && pending.id === messageId) {
    state.replyTo.set(roomId, update(pending));
    renderReplyBar();
  }
}
