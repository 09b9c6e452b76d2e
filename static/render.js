// Rendering: the room list, search results, the conversation header and the
// message list. Reads `state`, calls back into `actions` for user input.

import { icon } from './icons.js';
import { $, el, fillAvatar, formatDay, formatDuration, formatSize, formatStamp, formatTime, hueFor, safeUrl } from './dom.js';
import { openLightbox } from './lightbox.js';
import { reactionChips, reactionPicker, reactionsSignature } from './reactions.js';
import { quoteNode } from './replies.js';
import { openShareDialog } from './share.js';
import {
  isGroup,
  isOwn,
  readInfo,
  roomAvatarUser,
  roomTitle,
  previewText,
  sortedMessages,
  sortedRooms,
  state,
  totalUnread,
  typingText,
} from './state.js';

let actions = {};

export function setActions(value) {
  actions = value;
}

// ---------------------------------------------------------------- room list

export function renderRoomList() {
  const list = $('room-list');
  const rooms = sortedRooms();
  const items = rooms.map((room) => roomItem(room));
  list.replaceChildren(...items);
  // While a message search is on, its results stand in the list's place.
  $('rooms-empty').hidden = !state.roomsLoaded || rooms.length > 0 || !$('message-search-panel').hidden;
  const unread = totalUnread();
  document.title = unread > 0 ? `(${unread}) chatd` : 'chatd';
}

function roomItem(room) {
  const group = isGroup(room);
  const other = roomAvatarUser(room);
  const unread = Number(room.unread_count) || 0;
  const typing = typingText(room.id);
  const avatar = el('span', { class: `avatar${group ? ' group' : ''}` });
  fillAvatar(avatar, other);
  const dot = group ? null : el('span', {
    class: `presence-dot${other.is_online ? ' online' : ''}`,
    testid: 'room-online',
    dataset: { online: String(Boolean(other.is_online)) },
    title: other.is_online ? 'Online' : 'Offline',
  });
  const preview = typing
    ? el('span', { class: 'room-preview typing', testid: 'room-preview', text: 'typing…' })
    : el('span', { class: 'room-preview', testid: 'room-preview', text: previewText(room.last_message) });
  const stamp = room.last_message ? formatStamp(room.last_message.created_at) : '';
  const button = el(
    'button',
    {
      type: 'button',
      class: 'room-button',
      onclick: () => actions.openRoom(room.id),
      'aria-current': room.id === state.currentRoomId ? 'true' : null,
    },
    el('span', { class: 'avatar-wrap' }, avatar, dot),
    el(
      'span',
      { class: 'room-body' },
      el(
        'span',
        { class: 'room-top' },
        el('span', { class: 'room-name', testid: 'room-name', text: roomTitle(room) }),
        el('span', { class: 'room-time', text: stamp }),
      ),
      el(
        'span',
        { class: 'room-bottom' },
        preview,
        el('span', {
          class: 'badge',
          testid: 'room-unread',
          text: unread > 99 ? '99+' : String(unread),
          hidden: unread === 0,
          'aria-label': `${unread} unread`,
        }),
      ),
    ),
  );
  return el(
    'li',
    {
      class: `room-item${room.id === state.currentRoomId ? ' active' : ''}${unread > 0 ? ' unread' : ''}`,
      testid: 'room-item',
      dataset: group
        ? { roomId: String(room.id), roomType: 'group' }
        : { roomId: String(room.id), roomType: 'direct', userId: String(other.id), email: other.email || '' },
    },
    button,
  );
}

// ----------------------------------------------------------- search results

export function renderSearchResults(result) {
  const list = $('search-results');
  if (result === null) {
    list.hidden = true;
    list.replaceChildren();
    return;
  }
  list.hidden = false;
  if (result.error) {
    list.replaceChildren(el('li', { class: 'search-note error', text: result.error }));
    return;
  }
  if (result.loading) {
    list.replaceChildren(el('li', { class: 'search-note', text: result.note || 'Searching…' }));
    return;
  }
  if (result.note) {
    list.replaceChildren(el('li', { class: 'search-note', testid: 'search-note', text: result.note }));
    return;
  }
  if (result.users.length === 0) {
    list.replaceChildren(el('li', { class: 'search-note', testid: 'search-empty', text: 'No users found' }));
    return;
  }
  list.replaceChildren(
    ...result.users.map((user) => {
      const avatar = el('span', { class: 'avatar small' });
      fillAvatar(avatar, user);
      return el(
        'li',
        { class: 'search-result', testid: 'search-result', dataset: { userId: String(user.id), email: user.email } },
        el(
          'button',
          { type: 'button', class: 'search-button', onclick: () => actions.startChatWith(user) },
          el('span', { class: 'avatar-wrap' }, avatar,
            el('span', { class: `presence-dot${user.is_online ? ' online' : ''}` })),
          el(
            'span',
            { class: 'search-body' },
            el('span', { class: 'search-name', text: user.name }),
            el('span', { class: 'search-email', text: user.email }),
          ),
          el('span', { class: 'search-action', text: 'Chat' }),
        ),
      );
    }),
  );
}

// ------------------------------------------------------ conversation header

export function renderConversationHeader() {
  const room = state.rooms.get(state.currentRoomId);
  const shown = Boolean(room);
  $('conv-main').hidden = !shown;
  $('conv-placeholder').hidden = shown;
  document.body.classList.toggle('show-conv', shown);
  if (!room) return;
  const group = isGroup(room);
  const other = roomAvatarUser(room);
  const avatar = $('conv-avatar');
  fillAvatar(avatar, other);
  avatar.classList.toggle('group', group);
  $('conv-name').textContent = roomTitle(room);
  $('group-info-button').hidden = !group;
  $('conv-main').classList.toggle('is-group', group);
  const status = $('conv-status');
  if (group) {
    const count = Number(room.member_count) || (room.participants || []).length;
    status.textContent = `${count} ${count === 1 ? 'member' : 'members'}`;
    delete status.dataset.online;
    status.classList.remove('online');
    return;
  }
  status.textContent = other.is_online ? 'online' : 'offline';
  status.dataset.online = String(Boolean(other.is_online));
  status.classList.toggle('online', Boolean(other.is_online));
}

export function renderTyping() {
  const node = $('typing-indicator');
  const line = state.currentRoomId === null ? '' : typingText(state.currentRoomId);
  node.textContent = line;
  node.classList.toggle('active', Boolean(line));
}

export function renderConnection() {
  const node = $('conn-status');
  node.dataset.state = state.connection;
  const label = { open: 'Online', connecting: 'Connecting…', offline: 'Reconnecting…' }[state.connection] || '';
  node.title = label;
  node.querySelector('.conn-label').textContent = label;
}

// ------------------------------------------------------------- message list

const rendered = new Map(); // key → {node, sig, filesSig}
let toolsOpenId = null; // the message whose tools a tap opened (phones)

/** Forget every rendered message (room switch, logout). */
export function clearMessageList() {
  rendered.clear();
  $('message-list').replaceChildren();
}

function dayKey(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? '' : date.toDateString();
}

/**
 * Bring the message list in line with the state of the current room with a
 * keyed update: unchanged messages keep their nodes (a playing voice message
 * keeps playing). `mode`: 'bottom' to scroll to the end, 'prepend' to keep the
 * view steady while older messages are added above, or undefined to follow
 * the end only when the reader was already there.
 */
export function renderMessages(mode) {
  const scroller = $('message-scroller');
  const list = $('message-list');
  const conv = state.convs.get(state.currentRoomId);
  const wasAtBottom = isNearBottom(scroller);
  const previousHeight = scroller.scrollHeight;
  const previousTop = scroller.scrollTop;

  renderHistoryStatus(conv);

  const wanted = [];
  if (conv && conv.loaded) {
    const group = isGroup(state.rooms.get(state.currentRoomId));
    let lastDay = null;
    let lastSender = null;
    for (const message of sortedMessages(conv)) {
      const day = dayKey(message.created_at);
      if (day && day !== lastDay) {
        wanted.push(dayEntry(day, message.created_at));
        lastDay = day;
        lastSender = null;
      }
      const senderId = message.sender_details ? message.sender_details.id : null;
      // In a group, the sender's name heads each run of its messages.
      const showSender = group && !isOwn(message) && senderId !== lastSender;
      lastSender = senderId;
      wanted.push(messageEntry(message, { group, showSender }));
    }
    // Scheduled ones wait in the composer's list (schedule.js), not here.
    const pendings = Array.from(state.pending.values())
      .filter((p) => p.roomId === state.currentRoomId && !p.sendAt)
      .sort((a, b) => a.createdAt - b.createdAt);
    for (const pending of pendings) wanted.push(pendingEntry(pending));
  }

  const keep = new Set(wanted.map((w) => w.key));
  for (const [key, entry] of rendered) {
    if (!keep.has(key)) {
      entry.node.remove();
      rendered.delete(key);
    }
  }
  let cursor = list.firstChild;
  for (const want of wanted) {
    let entry = rendered.get(want.key);
    if (!entry || entry.sig !== want.sig) {
      const node = want.build(entry);
      if (entry) {
        if (entry.node === cursor) cursor = node;
        entry.node.replaceWith(node);
      }
      entry = { node, sig: want.sig, filesSig: want.filesSig };
      rendered.set(want.key, entry);
    }
    if (entry.node === cursor) cursor = cursor.nextSibling;
    else list.insertBefore(entry.node, cursor);
  }

  if (mode === 'bottom' || (mode === undefined && wasAtBottom)) {
    scrollToBottom();
  } else if (mode === 'prepend') {
    scroller.scrollTop = previousTop + (scroller.scrollHeight - previousHeight);
  }
}

function renderHistoryStatus(conv) {
  const node = $('history-status');
  node.replaceChildren();
  if (!conv) return;
  if (conv.error) {
    node.append(el('span', { class: 'error', text: conv.error }), ' ',
      el('button', { type: 'button', class: 'link', text: 'Retry', onclick: () => actions.retryHistory() }));
  } else if (!conv.loaded || conv.loadingOlder) {
    node.append(el('span', { class: 'spinner', 'aria-hidden': 'true' }), el('span', { text: 'Loading messages…' }));
  } else if (conv.hasOlder) {
    node.append(el('button', {
      type: 'button', class: 'link', testid: 'load-older', text: 'Load earlier messages',
      onclick: () => actions.loadOlder(),
    }));
  } else if (conv.messages.size === 0 && !Array.from(state.pending.values()).some((p) => p.roomId === state.currentRoomId && !p.sendAt)) {
    node.append(el('span', { class: 'muted', testid: 'conv-empty', text: 'No messages yet. Say hello!' }));
  } else {
    node.append(el('span', { class: 'muted', text: 'Beginning of the conversation' }));
  }
}

export function isNearBottom(scroller = $('message-scroller')) {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
}

export function scrollToBottom() {
  const scroller = $('message-scroller');
  scroller.scrollTop = scroller.scrollHeight;
}

function dayEntry(day, iso) {
  return {
    key: `d:${day}`,
    sig: day,
    build: () => el('li', { class: 'day-separator', role: 'separator' }, el('span', { text: formatDay(iso) })),
  };
}

function filesSignature(files) {
  return JSON.stringify((files || []).map((f) => [f.file_path, f.thumbnail_path, f.file_name, f.file_size, f.duration]));
}

function messageEntry(message, { group = false, showSender = false } = {}) {
  const editing = state.editingId === message.id;
  const confirming = state.confirmDeleteId === message.id;
  const filesSig = filesSignature(message.files_data);
  const read = group && isOwn(message) ? readInfo(message) : null;
  const sender = showSender && message.sender_details ? message.sender_details : null;
  const reacting = state.reactingId === message.id;
  const flash = state.flashId === message.id;
  const sig = JSON.stringify([
    message.content, message.edited_at, message.is_deleted, message.is_read, message.is_liked,
    message.like_count, filesSig, editing, confirming, message.created_at, read,
    sender ? [sender.id, sender.name] : null,
    reactionsSignature(message), message.reply_to || null, message.forwarded_from || null, reacting, flash,
  ]);
  return {
    key: `m:${message.id}`,
    sig,
    filesSig,
    build: (previous) => buildMessage(message, { editing, confirming, previous, filesSig, read, sender, reacting, flash }),
  };
}

/** The status line of one's own message: Sent / Read, or in a group "Read by N". */
function statusNode(message, read) {
  if (read) {
    const text = read.count > 0 ? `Read by ${read.count}` : 'Sent';
    return el('span', {
      class: `status${read.count > 0 ? ' read' : ''}${read.all ? ' all' : ''}`,
      testid: 'message-status',
      dataset: { status: read.all ? 'read' : 'sent', readCount: String(read.count) },
      title: read.names && read.names.length > 0
        ? `Read by ${read.names.join(', ')}${read.count > read.names.length ? ` and ${read.count - read.names.length} more` : ''}`
        : null,
      text,
    });
  }
  return el('span', {
    class: `status${message.is_read ? ' read' : ''}`,
    testid: 'message-status',
    dataset: { status: message.is_read ? 'read' : 'sent' },
    text: message.is_read ? 'Read' : 'Sent',
  });
}

function buildMessage(message, { editing, confirming, previous, filesSig, read, sender, reacting, flash }) {
  const own = isOwn(message);
  const deleted = Boolean(message.is_deleted);
  const classes = ['msg', own ? 'own' : 'theirs', `type-${message.message_type}`];
  if (deleted) classes.push('deleted');
  if (flash) classes.push('flash');
  const bubble = el('div', { class: 'bubble' });
  if (sender) {
    const name = el('div', { class: 'sender-name', testid: 'message-sender', text: sender.name || 'Someone' });
    name.style.setProperty('--hue', String(hueFor(sender.id)));
    bubble.append(name);
  }
  const forwarded = message.forwarded_from;
  if (forwarded && !deleted) {
    bubble.append(el('div', { class: 'forwarded', testid: 'forwarded-from' },
      icon('forward', { size: 14 }), `Forwarded from ${forwarded.sender_name || 'someone'}`));
  }
  if (message.reply_to && !deleted) bubble.append(quoteNode(message.reply_to, message.room_id));

  if (!deleted && Array.isArray(message.files_data) && message.files_data.length > 0) {
    // Reuse the attachment nodes when the files did not change, so that an
    // audio being played or an image already decoded is not reloaded.
    const old = previous && previous.filesSig === filesSig && previous.node.querySelector('.attachments');
    bubble.append(old || buildAttachments(message));
  }

  if (deleted) {
    bubble.append(el('div', { class: 'content deleted-text', testid: 'message-content', text: 'Message deleted' }));
  } else if (editing) {
    bubble.append(buildEditor(message));
  } else if (message.content) {
    bubble.append(el('div', { class: 'content', testid: 'message-content', text: message.content }));
  }

  const meta = el('div', { class: 'meta' });
  if (message.edited_at && !deleted) {
    meta.append(el('span', { class: 'edited', testid: 'message-edited', text: 'edited', title: `Edited ${new Date(message.edited_at).toLocaleString()}` }));
  }
  meta.append(el('time', { class: 'time', datetime: message.created_at, title: new Date(message.created_at).toLocaleString(), text: formatTime(message.created_at) }));
  if (own && !deleted) meta.append(statusNode(message, read));
  bubble.append(meta);

  const row = el('div', { class: 'msg-row' }, bubble);
  if (!deleted) {
    const likeCount = Number(message.like_count) || 0;
    const like = el(
      'button',
      {
        type: 'button',
        class: `like-button${message.is_liked ? ' liked' : ''}${likeCount > 0 ? ' has-likes' : ''}`,
        testid: 'like-button',
        'aria-pressed': String(Boolean(message.is_liked)),
        title: message.is_liked ? 'Unlike' : 'Like',
        onclick: () => actions.toggleLike(message),
      },
      icon('heart', { filled: Boolean(message.is_liked), size: 16 }),
      el('span', { class: 'like-count', testid: 'like-count', text: likeCount > 0 ? String(likeCount) : '' }),
    );
    const tools = el('div', { class: 'msg-tools' }, like);
    if (own && message.message_type === 'text' && !editing) {
      tools.append(el('button', { type: 'button', class: 'tool', testid: 'edit-button', title: 'Edit', 'aria-label': 'Edit message', onclick: () => actions.startEdit(message.id) }, icon('edit', { size: 16 })));
    }
    tools.append(
      el('button', {
        type: 'button', class: 'tool', testid: 'react-button', title: 'React', 'aria-label': 'Add a reaction',
        'aria-expanded': String(reacting), onclick: () => actions.togglePicker(message),
      }, icon('smile', { size: 16 })),
      el('button', { type: 'button', class: 'tool', testid: 'reply-button', title: 'Reply', 'aria-label': 'Reply to this message', onclick: () => actions.startReply(message) }, icon('reply', { size: 16 })),
      el('button', { type: 'button', class: 'tool', testid: 'forward-button', title: 'Forward', 'aria-label': 'Forward this message', onclick: () => actions.openForward(message) }, icon('forward', { size: 16 })),
    );
    if (own) {
      tools.append(el('button', { type: 'button', class: 'tool', testid: 'delete-button', title: 'Delete', 'aria-label': 'Delete message', onclick: () => actions.askDelete(message.id) }, icon('trash', { size: 16 })));
    }
    row.append(tools);
  }

  if (toolsOpenId === message.id) classes.push('tools-open');
  const item = el('li', {
    class: classes.join(' '),
    testid: 'message',
    dataset: {
      id: String(message.id),
      type: message.message_type,
      own: String(own),
      senderId: message.sender_details ? String(message.sender_details.id) : '',
    },
  }, row);
  if (!deleted) {
    const chips = reactionChips(message);
    if (chips) item.append(chips);
    if (reacting) item.append(reactionPicker(message));
  }
  // Without hover (phones) a tap on the bubble shows or hides the tools.
  bubble.addEventListener('click', (event) => {
    if (!window.matchMedia('(hover: none)').matches || event.target.closest('a, button, audio, textarea')) return;
    const open = !item.classList.contains('tools-open');
    for (const other of document.querySelectorAll('.msg.tools-open')) other.classList.remove('tools-open');
    item.classList.toggle('tools-open', open);
    toolsOpenId = open ? message.id : null;
  });

  if (confirming) {
    item.append(el('div', { class: 'confirm-delete', testid: 'delete-prompt' },
      el('span', { text: 'Delete this message for everyone?' }),
      el('button', { type: 'button', class: 'danger small', testid: 'delete-confirm', text: 'Delete', onclick: () => actions.confirmDelete(message.id) }),
      el('button', { type: 'button', class: 'ghost small', testid: 'delete-cancel', text: 'Cancel', onclick: () => actions.cancelDelete() })));
  }
  return item;
}

function buildEditor(message) {
  const input = el('textarea', { class: 'edit-input', testid: 'edit-input', rows: '2', maxlength: '5000', 'aria-label': 'Edit message' });
  input.value = message.content || '';
  const save = () => actions.saveEdit(message.id, input.value);
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      save();
    } else if (event.key === 'Escape') {
      event.preventDefault();
      actions.cancelEdit();
    }
  });
  // Focus once the node is in the document.
  queueMicrotask(() => {
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  });
  return el('div', { class: 'editor' }, input,
    el('div', { class: 'editor-buttons' },
      el('button', { type: 'button', class: 'ghost small', testid: 'edit-cancel', text: 'Cancel', onclick: () => actions.cancelEdit() }),
      el('button', { type: 'button', class: 'primary small', testid: 'edit-save', text: 'Save', onclick: save })));
}

function buildAttachments(message) {
  const files = message.files_data;
  const wrap = el('div', { class: `attachments${files.length > 1 ? ' multi' : ''}` });
  files.forEach((file, index) => wrap.append(buildFile(message, file, index)));
  return wrap;
}

/** One file of a message, with its "share link" button. */
function buildFile(message, file, index) {
  const url = safeUrl(file.file_path);
  const mime = String(file.mime_type || '');
  const name = file.file_name || 'file';
  let body;
  let kind = 'file';
  if (mime.startsWith('image/') && url) {
    kind = 'image';
    // The thumbnail once the server made it (a message_update says so), else the image itself.
    const thumbnail = safeUrl(file.thumbnail_path);
    const img = el('img', {
      src: thumbnail || url, alt: name, loading: 'lazy', testid: 'message-image', decoding: 'async',
      dataset: { thumbnail: String(Boolean(thumbnail)) },
    });
    img.addEventListener('load', () => {
      if (stickToBottom) scrollToBottom();
    });
    body = el('a', {
      class: 'image-link', href: url, target: '_blank', rel: 'noopener noreferrer', title: name, testid: 'image-open',
    }, img);
    // A plain click shows the full image here; a modified one (new tab, download) stays the browser's.
    body.addEventListener('click', (event) => {
      if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      openLightbox({ message, index, url, name });
    });
  } else if (mime.startsWith('audio/') && url) {
    kind = 'audio';
    const messageType = message.message_type;
    const duration = typeof file.duration === 'number' ? file.duration : null;
    body = el('div', { class: `voice${messageType === 'voice' ? '' : ' audio-file'}`, testid: 'message-voice' },
      el('audio', { controls: true, preload: 'metadata', src: url, testid: 'message-audio' }),
      el('span', { class: 'voice-meta' },
        el('span', { class: 'duration', testid: 'message-duration', text: duration ? formatDuration(duration) : '' }),
        messageType === 'voice' ? null : el('span', { class: 'file-name', text: name })));
  } else {
    body = el('a', {
      class: 'file-link', href: url || '#', download: name, testid: 'message-file',
      target: '_blank', rel: 'noopener noreferrer',
    },
    el('span', { class: 'file-icon' }, icon('file', { size: 22 })),
    el('span', { class: 'file-text' },
      el('span', { class: 'file-name', text: name }),
      el('span', { class: 'file-size', text: formatSize(file.file_size) })));
  }
  const share = el('button', {
    type: 'button', class: 'tool file-share', testid: 'share-file', title: 'Share link', 'aria-label': `Share a link to ${name}`,
    onclick: () => openShareDialog({ messageId: message.id, index, name }),
  }, icon('link', { size: 16 }));
  return el('div', { class: `attachment is-${kind}`, testid: 'attachment', dataset: { index: String(index) } }, body, share);
}

export function pendingStatusText(pending) {
  if (pending.status === 'failed') return 'Not sent';
  if (pending.stage === 'uploading') return `Uploading ${Math.round(uploadedFraction(pending) * 100)}%`;
  if (pending.stage === 'queued') return 'Waiting for connection…';
  return 'Sending…';
}

function uploadedFraction(pending) {
  let total = 0;
  let loaded = 0;
  for (const f of pending.previews) {
    total += f.size;
    loaded += Math.min(f.loaded, f.size);
  }
  return total > 0 ? loaded / total : 1;
}

/** Refresh a pending message's status line and its files' progress without rebuilding it. */
export function updatePendingStatus(pending) {
  const entry = rendered.get(`p:${pending.tempId}`);
  if (!entry) return;
  const node = entry.node.querySelector('.pending-status');
  if (node) node.textContent = pendingStatusText(pending);
  const bars = entry.node.querySelectorAll('progress[data-testid="upload-progress"]');
  pending.previews.forEach((f, index) => {
    const bar = bars[index];
    if (bar) setUploadBar(bar, f);
  });
  const cancel = entry.node.querySelector('[data-testid="cancel-upload"]');
  if (cancel) cancel.hidden = pending.stage !== 'uploading';
}

function setUploadBar(bar, file) {
  const value = Math.min(file.loaded, file.size);
  // Only changes are written: each one is a step of the upload a test can observe.
  if (!bar.hasAttribute('value') || bar.value !== value) bar.value = value;
  bar.setAttribute('aria-valuetext', `${Math.round((value / Math.max(file.size, 1)) * 100)}%`);
}

function pendingEntry(pending) {
  // Progress is updated in place (updatePendingStatus), not by rebuilding.
  const sig = JSON.stringify([pending.status, pending.error]);
  return {
    key: `p:${pending.tempId}`,
    sig,
    build: () => buildPending(pending),
  };
}

function buildPending(pending) {
  const bubble = el('div', { class: 'bubble' });
  if (pending.replyTo) bubble.append(quoteNode(pending.replyTo));
  if (pending.previews && pending.previews.length > 0) {
    const wrap = el('div', { class: `attachments${pending.previews.length > 1 ? ' multi' : ''}` });
    for (const f of pending.previews) {
      const bar = el('progress', {
        class: 'upload-progress', testid: 'upload-progress', max: String(Math.max(f.size, 1)), 'aria-label': `Upload of ${f.name}`,
      });
      setUploadBar(bar, f);
      if (f.url && f.category === 'image') {
        const img = el('img', { src: f.url, alt: f.name });
        img.addEventListener('load', () => {
          if (stickToBottom) scrollToBottom();
        });
        wrap.append(el('span', { class: 'image-link pending-file' }, img, bar));
      } else {
        wrap.append(el('span', { class: 'file-link pending-file' },
          el('span', { class: 'file-icon' }, icon(f.category === 'voice' ? 'mic' : 'file', { size: 22 })),
          el('span', { class: 'file-text' },
            el('span', { class: 'file-name', text: f.name }),
            el('span', { class: 'file-size', text: formatSize(f.size) })),
          bar));
      }
    }
    bubble.append(wrap);
  }
  if (pending.content) bubble.append(el('div', { class: 'content', testid: 'message-content', text: pending.content }));
  const meta = el('div', { class: 'meta' },
    el('span', { class: 'status pending-status', testid: 'message-status', dataset: { status: pending.status }, text: pendingStatusText(pending) }));
  if (pending.previews && pending.previews.length > 0 && pending.status !== 'failed') {
    meta.append(el('button', {
      type: 'button', class: 'link cancel-upload', testid: 'cancel-upload', text: 'Cancel',
      'aria-label': 'Cancel sending this message', hidden: pending.stage !== 'uploading',
      onclick: () => actions.discardPending(pending.tempId),
    }));
  }
  bubble.append(meta);
  const item = el('li', {
    class: `msg own pending${pending.status === 'failed' ? ' failed' : ''}`,
    testid: 'message',
    dataset: { tempId: pending.tempId, pending: 'true', type: pending.messageType, own: 'true' },
  }, el('div', { class: 'msg-row' }, bubble));
  if (pending.status === 'failed') {
    item.append(el('div', { class: 'pending-error', testid: 'pending-error' },
      el('span', { text: pending.error || 'Could not be sent' }),
      el('button', { type: 'button', class: 'link', testid: 'retry-button', text: 'Retry', onclick: () => actions.retryPending(pending.tempId) }),
      el('button', { type: 'button', class: 'link', testid: 'discard-button', text: 'Discard', onclick: () => actions.discardPending(pending.tempId) })));
  }
  return item;
}

/** Whether the reader follows the end of the conversation (kept by the scroll listener). */
export let stickToBottom = true;

export function updateStickiness() {
  stickToBottom = isNearBottom();
}
