// chatd web client: boot, sign-in, the live link and what its events do to
// the state, rooms and conversations. Rendering lives in render.js, the
// composer in composer.js, attachments in files.js.

import { api, ApiError, getToken, setToken, setUnauthorizedHandler } from './api.js';
import {
  clearComposer,
  focusComposer,
  hideComposerError,
  initComposer,
  restoreDraft,
  saveDraft,
  setProgress,
  showComposerError,
  stopTyping,
} from './composer.js';
import { $, fillAvatar, newTempId } from './dom.js';
import { chooseMessageType, readAsBase64 } from './files.js';
import {
  clearMessageList,
  isNearBottom,
  renderConnection,
  renderConversationHeader,
  renderMessages,
  renderRoomList,
  renderSearchResults,
  renderTyping,
  setActions,
  updatePendingStatus,
  updateStickiness,
} from './render.js';
import { ChatSocket } from './socket.js';
import {
  isOwn,
  newConversation,
  newestId,
  oldestId,
  patchMessage,
  resetState,
  revokePreviews,
  setPresence,
  state,
  upsertMessage,
} from './state.js';

const TYPING_SHOWN_MS = 6000;
const AUTH_EXPIRED_TEXT = 'Your session has expired. Please log in again.';

const socket = new ChatSocket({
  url: () => {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    return `${scheme}://${location.host}/api/chat/ws?token=${encodeURIComponent(getToken() || '')}`;
  },
  onEvent: (event) => handleEvent(event),
  onOpen: () => handleOpen(),
  onState: (value) => {
    state.connection = value;
    renderConnection();
  },
  onAuthExpired: () => logout(AUTH_EXPIRED_TEXT),
  onConnectFailed: () => checkTokenSoon(),
});

// ------------------------------------------------------------------ auth

function showAuth(message) {
  $('chat-view').hidden = true;
  $('auth-view').hidden = false;
  document.body.classList.remove('show-conv');
  document.title = 'chatd';
  setAuthError(message || '');
}

function setAuthError(text) {
  const node = $('auth-error');
  node.textContent = text;
  node.hidden = !text;
}

function selectAuthTab(which) {
  const login = which === 'login';
  $('login-form').hidden = !login;
  $('register-form').hidden = login;
  $('tab-login').setAttribute('aria-selected', String(login));
  $('tab-register').setAttribute('aria-selected', String(!login));
  setAuthError('');
  const first = login ? $('login-form').elements.email : $('register-form').elements.name;
  first.focus();
}

async function submitAuth(event, kind) {
  event.preventDefault();
  const form = event.currentTarget;
  const button = form.querySelector('button[type=submit]');
  const email = form.elements.email.value.trim();
  const password = form.elements.password.value;
  let name = '';
  if (kind === 'register') {
    name = form.elements.name.value.trim();
    if (!name) return setAuthError('Please enter your name.');
  }
  if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(email)) return setAuthError('Please enter a valid email address.');
  if (kind === 'register' && password.length < 8) return setAuthError('The password needs at least 8 characters.');
  if (!password) return setAuthError('Please enter your password.');
  setAuthError('');
  button.disabled = true;
  try {
    const answer = kind === 'register' ? await api.register(name, email, password) : await api.login(email, password);
    setToken(answer.access_token);
    form.reset();
    enterChat(answer.user);
  } catch (error) {
    setAuthError(error instanceof ApiError ? error.message : 'Something went wrong. Please try again.');
  } finally {
    button.disabled = false;
  }
}

/** Bumped on every sign-in and sign-out, so that late answers of an old session are dropped. */
let session = 0;

function enterChat(user) {
  session += 1;
  resetState();
  state.me = user;
  clearMessageList();
  clearComposer();
  $('auth-view').hidden = true;
  $('chat-view').hidden = false;
  $('me-name').textContent = user.name;
  $('me-name').title = user.email;
  fillAvatar($('me-avatar'), user);
  renderSearchResults(null);
  $('search-input').value = '';
  renderConversationHeader();
  renderConnection();
  renderRoomList();
  socket.start();
  loadRooms().then(() => {
    const wanted = roomFromHash();
    if (wanted !== null) openRoom(wanted);
  });
}

function logout(message) {
  if (!state.me && !getToken()) return;
  session += 1;
  stopTyping();
  socket.stop();
  setToken(null);
  resetState();
  clearMessageList();
  clearComposer();
  history.replaceState(null, '', location.pathname);
  showAuth(message);
  selectAuthTab('login');
  if (message) setAuthError(message);
}

let lastTokenCheck = 0;
/** The handshake failing may mean an expired token (the server answers 401 before the upgrade). */
function checkTokenSoon() {
  if (Date.now() - lastTokenCheck < 5000 || !state.me) return;
  lastTokenCheck = Date.now();
  api.me().catch(() => {
    // A 401 logs out through the unauthorized handler; anything else is the network.
  });
}

setUnauthorizedHandler(() => {
  if (state.me) logout(AUTH_EXPIRED_TEXT);
});

// ----------------------------------------------------------------- rooms

async function loadRooms() {
  const mine = session;
  try {
    const answer = await api.rooms();
    if (mine !== session) return;
    const fresh = new Map();
    for (const room of answer.rooms || []) {
      const known = state.rooms.get(room.id);
      // A live event may be newer than the list that was computed before it.
      if (known && known.last_message && (!room.last_message || known.last_message.id > room.last_message.id)) {
        room.last_message = known.last_message;
      }
      fresh.set(room.id, room);
    }
    // Rooms that arrived live while the list was loading.
    for (const [id, room] of state.rooms) if (!fresh.has(id)) fresh.set(id, room);
    state.rooms = fresh;
    state.roomsLoaded = true;
    renderRoomList();
    renderConversationHeader();
  } catch (error) {
    if (mine === session && error.status !== 401) showComposerError(`Could not load conversations: ${error.message}`);
  }
}

const roomFetches = new Set();
/** A message in a room this client does not know yet (someone just wrote first). */
async function fetchRoom(roomId) {
  if (roomFetches.has(roomId)) return;
  roomFetches.add(roomId);
  try {
    const room = await api.room(roomId);
    if (!state.rooms.has(room.id)) state.rooms.set(room.id, room);
    renderRoomList();
  } catch {
    // The next reconnect or reload lists it.
  } finally {
    roomFetches.delete(roomId);
  }
}

function roomFromHash() {
  const match = /^#room=(\d+)$/.exec(location.hash);
  return match ? Number(match[1]) : null;
}

function isViewing(roomId) {
  return (
    roomId !== null &&
    state.currentRoomId === roomId &&
    document.visibilityState === 'visible' &&
    !$('conv-main').hidden
  );
}

async function openRoom(roomId) {
  if (!state.rooms.has(roomId)) {
    try {
      const room = await api.room(roomId);
      state.rooms.set(room.id, room);
    } catch {
      history.replaceState(null, '', location.pathname);
      return;
    }
  }
  if (state.currentRoomId !== roomId) {
    if (state.currentRoomId !== null) saveDraft(state.currentRoomId);
    stopTyping();
    state.currentRoomId = roomId;
    state.editingId = null;
    state.confirmDeleteId = null;
    clearMessageList();
    restoreDraft(roomId);
    socket.send('join_room', { room_id: roomId });
  }
  history.replaceState(null, '', `#room=${roomId}`);
  renderConversationHeader();
  renderRoomList();
  renderTyping();
  let conv = state.convs.get(roomId);
  if (!conv) {
    conv = newConversation();
    state.convs.set(roomId, conv);
  }
  if (!conv.loaded && !conv.loading) loadFirstPage(roomId);
  else renderMessages('bottom');
  markReadIfViewing(roomId);
  focusComposer();
}

function closeRoom() {
  if (state.currentRoomId !== null) saveDraft(state.currentRoomId);
  stopTyping();
  state.currentRoomId = null;
  state.editingId = null;
  state.confirmDeleteId = null;
  clearMessageList();
  history.replaceState(null, '', location.pathname);
  renderConversationHeader();
  renderRoomList();
}

async function loadFirstPage(roomId) {
  const conv = state.convs.get(roomId);
  conv.loading = true;
  conv.error = null;
  if (state.currentRoomId === roomId) renderMessages('bottom');
  try {
    const page = await api.messagesPage(roomId, 1, 50);
    for (const message of page.messages || []) upsertMessage(message);
    conv.hasOlder = Boolean(page.has_more);
    conv.loaded = true;
  } catch (error) {
    conv.error = `Could not load messages: ${error.message}`;
  } finally {
    conv.loading = false;
  }
  if (state.currentRoomId !== roomId) return;
  renderMessages('bottom');
  markReadIfViewing(roomId);
  fillViewport();
}

/** When the first page does not fill the screen, fetch older ones until it does. */
function fillViewport() {
  const scroller = $('message-scroller');
  const conv = state.convs.get(state.currentRoomId);
  if (conv && conv.loaded && conv.hasOlder && scroller.scrollHeight <= scroller.clientHeight + 10) loadOlder();
}

async function loadOlder() {
  const roomId = state.currentRoomId;
  const conv = state.convs.get(roomId);
  if (!conv || !conv.loaded || !conv.hasOlder || conv.loadingOlder) return;
  const before = oldestId(conv);
  if (before === null) return;
  conv.loadingOlder = true;
  renderMessages('prepend');
  try {
    const page = await api.messagesBefore(roomId, before, 50);
    for (const message of page.messages || []) upsertMessage(message);
    conv.hasOlder = Boolean(page.has_more) && (page.messages || []).length > 0;
  } catch (error) {
    showComposerError(`Could not load older messages: ${error.message}`);
  } finally {
    conv.loadingOlder = false;
  }
  if (state.currentRoomId === roomId) {
    renderMessages('prepend');
    fillViewport();
  }
}

function markReadIfViewing(roomId) {
  if (isViewing(roomId)) markRead(roomId);
}

function markRead(roomId) {
  const room = state.rooms.get(roomId);
  const conv = state.convs.get(roomId);
  let unread = Boolean(room && Number(room.unread_count) > 0);
  if (conv) {
    for (const message of conv.messages.values()) {
      if (!isOwn(message) && !message.is_read) {
        unread = true;
        conv.messages.set(message.id, { ...message, is_read: true });
      }
    }
  }
  if (!unread) return;
  if (room) room.unread_count = 0;
  if (!socket.send('mark_read', { room_id: roomId })) {
    api.markRead(roomId).catch(() => {
      // Marked on the next view.
    });
  }
  renderRoomList();
}

// ------------------------------------------------------- the live link

function handleOpen() {
  // Where each open conversation stood before this link delivers anything:
  // the catch-up starts there, whatever arrives live in the meantime
  // (including the echoes of the pending messages re-sent just below).
  for (const [roomId, conv] of state.convs) {
    if (!conv.loaded) continue;
    const mark = newestId(conv);
    const earlier = catchUpMarks.get(roomId);
    catchUpMarks.set(roomId, earlier === undefined || earlier === null || mark === null ? (earlier ?? mark) : Math.min(earlier, mark));
  }
  if (state.currentRoomId !== null) socket.send('join_room', { room_id: state.currentRoomId });
  const waiting = Array.from(state.pending.values())
    .filter((p) => p.status === 'sending' && p.data)
    .sort((a, b) => a.createdAt - b.createdAt);
  for (const pending of waiting) transmit(pending);
  catchUp();
}

/** room id → the newest message id known to be contiguous before a (re)connect. */
const catchUpMarks = new Map();
let catchUpRunning = null;
let catchUpAgain = false;

/** After (re)connecting: the room list, then every open conversation from its mark on. */
function catchUp() {
  if (catchUpRunning) {
    catchUpAgain = true;
    return catchUpRunning;
  }
  catchUpRunning = (async () => {
    do {
      catchUpAgain = false;
      await loadRooms();
      const marks = new Map(catchUpMarks);
      catchUpMarks.clear();
      for (const [roomId, mark] of marks) {
        const conv = state.convs.get(roomId);
        if (!conv || !conv.loaded) continue;
        try {
          await catchUpRoom(roomId, conv, mark);
        } catch {
          // Try again on the next connection, from the same mark.
          if (!catchUpMarks.has(roomId)) catchUpMarks.set(roomId, mark);
        }
      }
      const current = state.currentRoomId;
      if (current !== null) {
        renderMessages();
        markReadIfViewing(current);
      }
    } while (catchUpAgain);
  })().finally(() => {
    catchUpRunning = null;
  });
  return catchUpRunning;
}

async function catchUpRoom(roomId, conv, mark) {
  let after = mark;
  if (after === null || after === undefined) {
    const page = await api.messagesPage(roomId, 1, 50);
    for (const message of page.messages || []) upsertMessage(message);
    conv.hasOlder = Boolean(page.has_more);
    return;
  }
  for (let round = 0; round < 100; round += 1) {
    const page = await api.messagesAfter(roomId, after, 100);
    const messages = page.messages || [];
    for (const message of messages) upsertMessage(message);
    const highest = messages.reduce((max, m) => Math.max(max, m.id), after);
    if (!page.has_more || highest <= after) break;
    after = highest;
  }
  if (roomId === state.currentRoomId) {
    // Edits, deletions, likes and read marks made while away, on what is on screen.
    const page = await api.messagesPage(roomId, 1, 50);
    for (const message of page.messages || []) {
      if (conv.messages.has(message.id)) upsertMessage(message);
    }
  }
}

function handleEvent(event) {
  const data = event.data || {};
  switch (event.type) {
    case 'new_message':
      onNewMessage(data);
      break;
    case 'message_update':
      onMessageUpdate(data);
      break;
    case 'message_delete':
      onMessageDelete(data);
      break;
    case 'message_like':
      onMessageLike(data);
      break;
    case 'message_read':
      onMessageRead(data);
      break;
    case 'typing':
      onTyping(data);
      break;
    case 'presence':
      setPresence(data.user_id, Boolean(data.is_online));
      renderRoomList();
      renderConversationHeader();
      break;
    case 'error':
      onServerError(event);
      break;
    default:
      // room_joined, room_left, pong: nothing to show.
      break;
  }
}

function onNewMessage(message) {
  if (typeof message.id !== 'number' || typeof message.room_id !== 'number') return;
  const roomId = message.room_id;
  const own = isOwn(message);
  if (message.local_temp_id && state.pending.has(message.local_temp_id)) {
    const pending = state.pending.get(message.local_temp_id);
    state.pending.delete(message.local_temp_id);
    revokePreviews(pending);
    updateProgress();
  }
  const conv = state.convs.get(roomId);
  const known = conv && conv.messages.has(message.id);
  upsertMessage(message);

  const room = state.rooms.get(roomId);
  if (!room) {
    fetchRoom(roomId);
  } else {
    if (!room.last_message || room.last_message.id <= message.id) {
      room.last_message = message;
      room.updated_at = message.created_at;
    }
    if (!own && !known && !message.is_read) {
      if (isViewing(roomId)) markRead(roomId);
      else room.unread_count = (Number(room.unread_count) || 0) + 1;
    }
  }
  if (!own) clearTyping(roomId);
  renderRoomList();
  if (roomId === state.currentRoomId) {
    const follow = own || isNearBottom();
    renderMessages(follow ? 'bottom' : undefined);
    if (isViewing(roomId) && !own) markRead(roomId);
  }
}

function onMessageUpdate(message) {
  if (typeof message.id !== 'number') return;
  patchMessage(message.room_id, message.id, (current) => ({
    ...message,
    // The sender's own view of these stays what it was.
    local_temp_id: current.local_temp_id ?? null,
  }));
  renderRoomList();
  if (message.room_id === state.currentRoomId) renderMessages();
}

function onMessageDelete(data) {
  patchMessage(data.room_id, data.id, { content: '', files_data: null, is_deleted: true });
  if (state.editingId === data.id) state.editingId = null;
  if (state.confirmDeleteId === data.id) state.confirmDeleteId = null;
  renderRoomList();
  if (data.room_id === state.currentRoomId) renderMessages();
}

function onMessageLike(data) {
  patchMessage(data.room_id, data.id, (current) => {
    const change = { like_count: data.like_count };
    if (state.me && data.user_id === state.me.id) {
      // Liked or unliked from another tab of ours: the count says which.
      const before = Number(current.like_count) || 0;
      if (data.like_count > before) change.is_liked = true;
      else if (data.like_count < before) change.is_liked = false;
    }
    return change;
  });
  if (data.room_id === state.currentRoomId) renderMessages();
}

function onMessageRead(data) {
  const roomId = data.room_id;
  if (state.me && data.user_id === state.me.id) {
    // Read in another tab of ours.
    const room = state.rooms.get(roomId);
    if (room) room.unread_count = 0;
    renderRoomList();
    return;
  }
  const conv = state.convs.get(roomId);
  if (conv) {
    for (const message of conv.messages.values()) {
      if (isOwn(message) && !message.is_read) conv.messages.set(message.id, { ...message, is_read: true });
    }
  }
  const room = state.rooms.get(roomId);
  if (room && room.last_message && isOwn(room.last_message)) room.last_message = { ...room.last_message, is_read: true };
  if (roomId === state.currentRoomId) renderMessages();
}

function onTyping(data) {
  if (!state.me || data.user_id === state.me.id) return;
  const roomId = data.room_id;
  if (data.is_typing) {
    const previous = state.typing.get(roomId);
    if (previous) clearTimeout(previous.timer);
    const room = state.rooms.get(roomId);
    const name = data.user_name || (room && room.other_user && room.other_user.name) || 'Someone';
    state.typing.set(roomId, {
      userId: data.user_id,
      userName: name,
      timer: setTimeout(() => clearTyping(roomId), TYPING_SHOWN_MS),
    });
    renderTyping();
    renderRoomList();
  } else {
    clearTyping(roomId);
  }
}

function clearTyping(roomId) {
  const entry = state.typing.get(roomId);
  if (!entry) return;
  clearTimeout(entry.timer);
  state.typing.delete(roomId);
  renderTyping();
  renderRoomList();
}

function onServerError(event) {
  const text = event.message || (event.data && event.data.message) || 'The server refused the request';
  const tempId = event.local_temp_id ?? (event.data && event.data.local_temp_id) ?? null;
  const pending = tempId ? state.pending.get(tempId) : null;
  if (pending) {
    pending.status = 'failed';
    pending.error = text;
    pending.stage = null;
    updateProgress();
    if (pending.roomId === state.currentRoomId) renderMessages();
  }
  showComposerError(text);
}

// ------------------------------------------------------------- sending

/** Called by the composer with what to send; shows it as pending at once. */
async function submitMessage({ roomId, content, items }) {
  const room = state.rooms.get(roomId);
  if (!room) return;
  const tempId = newTempId();
  const messageType = chooseMessageType(items);
  const pending = {
    tempId,
    roomId,
    content,
    messageType,
    createdAt: Date.now(),
    status: 'sending',
    stage: items.length > 0 ? 'preparing' : 'queued',
    error: null,
    data: null,
    bytes: 0,
    progress: 0,
    previews: items.map((item) => ({
      name: item.name,
      size: item.size,
      category: item.category,
      url: item.category === 'image' ? URL.createObjectURL(item.file) : null,
    })),
  };
  state.pending.set(tempId, pending);
  if (roomId === state.currentRoomId) renderMessages('bottom');

  let filesData = null;
  if (items.length > 0) {
    setProgress(0, `Preparing ${items.length === 1 ? items[0].name : `${items.length} files`}…`);
    try {
      filesData = [];
      for (const item of items) {
        filesData.push({
          file_data: await readAsBase64(item.file),
          file_name: item.name,
          file_size: item.size,
          mime_type: item.mime,
          duration: typeof item.duration === 'number' ? item.duration : null,
        });
      }
    } catch (error) {
      pending.status = 'failed';
      pending.error = `Could not read the file: ${error.message}`;
      updateProgress();
      if (roomId === state.currentRoomId) renderMessages();
      return;
    }
    if (!state.pending.has(tempId)) return; // discarded meanwhile
  }
  const other = room.other_user || null;
  pending.data = {
    room_id: roomId,
    receiver_id: other ? other.id : undefined,
    message_type: messageType,
    content,
    local_temp_id: tempId,
    files_data: filesData,
  };
  pending.stage = 'queued';
  transmit(pending);
}

function transmit(pending) {
  const sent = socket.send('send_message', pending.data);
  if (sent) {
    pending.bytes = sent;
    pending.stage = pending.data.files_data ? 'uploading' : 'sending';
    pending.progress = 0;
    pending.sentAt = Date.now();
  } else {
    pending.stage = 'queued';
  }
  updateProgress();
  updatePendingStatus(pending);
}

let progressTimer = null;

/** Upload progress: the socket's send buffer draining, then the echo. */
function updateProgress() {
  const inFlight = Array.from(state.pending.values())
    .filter((p) => p.status === 'sending' && p.data && p.data.files_data && (p.stage === 'uploading' || p.stage === 'processing'))
    .sort((a, b) => a.sentAt - b.sentAt);
  const preparing = Array.from(state.pending.values()).some((p) => p.status === 'sending' && p.stage === 'preparing');
  if (inFlight.length === 0) {
    clearInterval(progressTimer);
    progressTimer = null;
    if (!preparing) setProgress(null);
    return;
  }
  // Frames leave in order, so what is still buffered belongs to the newest ones.
  let buffered = socket.bufferedAmount;
  let total = 0;
  for (let i = inFlight.length - 1; i >= 0; i -= 1) {
    const pending = inFlight[i];
    const left = Math.min(pending.bytes, buffered);
    buffered -= left;
    total += pending.bytes;
    pending.progress = pending.bytes > 0 ? 1 - left / pending.bytes : 1;
    pending.stage = pending.progress >= 1 ? 'processing' : 'uploading';
    updatePendingStatus(pending);
  }
  const fraction = 1 - socket.bufferedAmount / Math.max(total, 1);
  if (fraction >= 1) setProgress(1, 'Sent, waiting for the server…');
  else setProgress(fraction, `Uploading… ${Math.round(fraction * 100)}%`);
  if (!progressTimer) progressTimer = setInterval(updateProgress, 100);
}

function retryPending(tempId) {
  const pending = state.pending.get(tempId);
  if (!pending) return;
  pending.status = 'sending';
  pending.error = null;
  hideComposerError();
  if (pending.data) transmit(pending);
  if (pending.roomId === state.currentRoomId) renderMessages();
}

function discardPending(tempId) {
  const pending = state.pending.get(tempId);
  if (!pending) return;
  state.pending.delete(tempId);
  revokePreviews(pending);
  updateProgress();
  hideComposerError();
  if (pending.roomId === state.currentRoomId) renderMessages();
}

// ------------------------------------------------- message actions (REST)

async function toggleLike(message) {
  try {
    const answer = message.is_liked ? await api.unlike(message.id) : await api.like(message.id);
    patchMessage(message.room_id, message.id, { is_liked: answer.is_liked, like_count: answer.like_count });
    if (message.room_id === state.currentRoomId) renderMessages();
  } catch (error) {
    showComposerError(error.message);
  }
}

function startEdit(messageId) {
  state.editingId = messageId;
  state.confirmDeleteId = null;
  renderMessages();
}

function cancelEdit() {
  state.editingId = null;
  renderMessages();
  focusComposer();
}

async function saveEdit(messageId, text) {
  const roomId = state.currentRoomId;
  const content = text.trim();
  const conv = state.convs.get(roomId);
  const current = conv && conv.messages.get(messageId);
  if (!content) {
    showComposerError('A message cannot be empty. Delete it instead.');
    return;
  }
  if (Array.from(content).length > 5000) {
    showComposerError('A message can have at most 5000 characters.');
    return;
  }
  if (current && current.content === content) {
    cancelEdit();
    return;
  }
  try {
    const message = await api.editMessage(messageId, content);
    patchMessage(message.room_id, message.id, { ...message, local_temp_id: null });
    if (state.editingId === messageId) state.editingId = null;
    hideComposerError();
    renderRoomList();
    if (message.room_id === state.currentRoomId) renderMessages();
    focusComposer();
  } catch (error) {
    showComposerError(error.message);
  }
}

function askDelete(messageId) {
  state.confirmDeleteId = messageId;
  state.editingId = null;
  renderMessages();
}

function cancelDelete() {
  state.confirmDeleteId = null;
  renderMessages();
}

async function confirmDelete(messageId) {
  try {
    const message = await api.deleteMessage(messageId);
    patchMessage(message.room_id, message.id, { content: '', files_data: null, is_deleted: true });
    state.confirmDeleteId = null;
    renderRoomList();
    if (message.room_id === state.currentRoomId) renderMessages();
  } catch (error) {
    showComposerError(error.message);
  }
}

// ---------------------------------------------------------------- search

let searchTimer = null;
let searchSerial = 0;

function onSearchInput() {
  clearTimeout(searchTimer);
  const text = $('search-input').value.trim();
  if (!text) {
    searchSerial += 1;
    renderSearchResults(null);
    return;
  }
  searchTimer = setTimeout(() => runSearch(text), 250);
}

async function runSearch(text) {
  const serial = ++searchSerial;
  renderSearchResults({ loading: true, users: [] });
  try {
    const answer = await api.searchUsers(text, 20);
    if (serial === searchSerial) renderSearchResults({ users: answer.users || [] });
  } catch (error) {
    if (serial === searchSerial) renderSearchResults({ error: error.message, users: [] });
  }
}

async function startChatWith(user) {
  try {
    const room = await api.createRoom(user.id);
    const known = state.rooms.get(room.id);
    state.rooms.set(room.id, known ? { ...known, ...room } : room);
    $('search-input').value = '';
    searchSerial += 1;
    renderSearchResults(null);
    renderRoomList();
    openRoom(room.id);
  } catch (error) {
    renderSearchResults({ error: error.message, users: [] });
  }
}

// ------------------------------------------------------------------ wiring

setActions({
  openRoom: (id) => openRoom(id),
  startChatWith,
  toggleLike,
  startEdit,
  saveEdit,
  cancelEdit,
  askDelete,
  cancelDelete,
  confirmDelete,
  retryPending,
  discardPending,
  loadOlder,
  retryHistory: () => {
    const roomId = state.currentRoomId;
    const conv = state.convs.get(roomId);
    if (conv && !conv.loaded && !conv.loading) loadFirstPage(roomId);
  },
});

function wire() {
  $('tab-login').addEventListener('click', () => selectAuthTab('login'));
  $('tab-register').addEventListener('click', () => selectAuthTab('register'));
  $('login-form').addEventListener('submit', (event) => submitAuth(event, 'login'));
  $('register-form').addEventListener('submit', (event) => submitAuth(event, 'register'));
  $('logout-button').addEventListener('click', () => logout());
  $('back-button').addEventListener('click', () => closeRoom());
  $('search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('search-input').value.trim();
    if (text) runSearch(text);
  });
  $('search-input').addEventListener('input', onSearchInput);
  $('search-input').addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      $('search-input').value = '';
      onSearchInput();
    }
  });
  const scroller = $('message-scroller');
  scroller.addEventListener('scroll', () => {
    updateStickiness();
    if (scroller.scrollTop < 60) loadOlder();
    if (isNearBottom()) markReadIfViewing(state.currentRoomId);
  }, { passive: true });
  document.addEventListener('visibilitychange', () => markReadIfViewing(state.currentRoomId));
  window.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && state.editingId === null && state.confirmDeleteId === null
        && window.matchMedia('(max-width: 759px)').matches && state.currentRoomId !== null
        && document.activeElement !== $('search-input')) {
      closeRoom();
    }
  });
  initComposer({ submit: submitMessage, socket, getRoomId: () => state.currentRoomId });
}

/** Hooks for the browser tests; harmless for people. */
window.__chatd = {
  dropSocket: () => socket.drop(),
  simulateOffline: (ms) => socket.simulateOffline(ms),
  connection: () => state.connection,
  pendingCount: () => state.pending.size,
};

async function boot() {
  wire();
  const token = getToken();
  if (!token) {
    showAuth();
    selectAuthTab('login');
    return;
  }
  try {
    const user = await api.me();
    enterChat(user);
  } catch (error) {
    if (error.status === 401) setToken(null);
    showAuth(error.status === 401 ? AUTH_EXPIRED_TEXT : error.message);
  }
}

boot();
