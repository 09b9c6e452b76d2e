// chatd web client: boot, sign-in, the live link and what its events do to
// the state, rooms and conversations. Rendering lives in render.js, the
// composer in composer.js, attachments in files.js, their uploads in
// uploads.js, the full image in lightbox.js, share links in share.js,
// groups in groups.js; reactions, replies, forwarding, search and
// scheduling (SPEC section 10) in reactions.js, replies.js, forward.js,
// search.js and schedule.js.

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
import { chooseMessageType } from './files.js';
import { closeForwardDialog, initForward, isForwardOpen, openForwardDialog } from './forward.js';
import { closeLightbox, initLightbox, isLightboxOpen } from './lightbox.js';
import {
  applyMemberAdded,
  applyMemberRemoved,
  applyRead,
  closePanel,
  forgetMembers,
  initGroups,
  leftNotice,
  loadMembers,
  panelRoomId,
  renderPanel,
  syncMemberCount,
  userSearch,
} from './groups.js';
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
import { applyReactionEvent, initReactions, togglePicker } from './reactions.js';
import { initReplies, refreshQuotes, startReply } from './replies.js';
import { initSchedule, loadScheduled, onDelivered, onMessageScheduled, renderScheduled } from './schedule.js';
import { clearSearch, initSearch, renderSearchScope } from './search.js';
import { closeShareDialog, initShare, isShareOpen } from './share.js';
import { ChatSocket } from './socket.js';
import { isAbort, uploadFile } from './uploads.js';
import {
  isGroup,
  isOwn,
  newConversation,
  newestId,
  oldestId,
  patchMessage,
  resetState,
  releasePending,
  setPresence,
  state,
  upsertMessage,
} from './state.js';

const TYPING_SHOWN_MS = 6000;
const AUTH_EXPIRED_TEXT = 'Your session has expired. Please log in again.';
const NOTICE_MS = 8000;
/** How long a message jumped to stays highlighted. */
const FLASH_MS = 2500;
/** How far back a jump to a message loads history (pages of JUMP_PAGE) before it gives up. */
const JUMP_PAGES = 20;
const JUMP_PAGE = 100;

/** The cursor this connection was opened with (null: none, a plain connection). */
let connectCursor = null;

const socket = new ChatSocket({
  url: () => {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    // With a cursor the server first replays every event after it (SPEC section 9).
    connectCursor = state.cursor;
    const cursor = connectCursor ? `&cursor=${encodeURIComponent(connectCursor)}` : '';
    return `${scheme}://${location.host}/api/chat/ws?token=${encodeURIComponent(getToken() || '')}${cursor}`;
  },
  onEvent: (event) => handleEvent(event),
  onOpen: () => handleOpen(),
  onState: (value) => {
    state.connection = value;
    renderConnection();
    renderPanel();
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

// The event cursor is kept per user in sessionStorage: a reload of the tab
// resumes the stream where it stopped; another tab starts its own.
const cursorKey = (userId) => `chatd.cursor.${userId}`;

function storedCursor(userId) {
  try {
    return sessionStorage.getItem(cursorKey(userId));
  } catch {
    return null;
  }
}

function saveCursor(value) {
  state.cursor = value || null;
  if (!state.me) return;
  try {
    if (value) sessionStorage.setItem(cursorKey(state.me.id), value);
    else sessionStorage.removeItem(cursorKey(state.me.id));
  } catch {
    // No storage: the cursor lives as long as the page.
  }
}

function enterChat(user) {
  session += 1;
  resetState();
  resetLiveState();
  state.me = user;
  state.cursor = storedCursor(user.id);
  closePanel();
  clearMessageList();
  clearComposer();
  $('auth-view').hidden = true;
  $('chat-view').hidden = false;
  $('me-name').textContent = user.name;
  $('me-name').title = user.email;
  fillAvatar($('me-avatar'), user);
  renderSearchResults(null);
  $('search-input').value = '';
  $('message-search-input').value = '';
  clearSearch();
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
  saveCursor(null);
  closePanel();
  resetState();
  resetLiveState();
  clearMessageList();
  clearComposer();
  closeForwardDialog();
  closeShareDialog();
  closeLightbox();
  $('message-search-input').value = '';
  clearSearch();
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

/**
 * What live events did to the room list while a GET /rooms was under way:
 * its answer may be older than they are, and they win.
 */
const roomLoads = new Set();

function noteRoomArrived(roomId) {
  for (const load of roomLoads) {
    load.gone.delete(roomId);
    load.arrived.add(roomId);
  }
}

function noteRoomGone(roomId) {
  for (const load of roomLoads) {
    load.arrived.delete(roomId);
    load.gone.add(roomId);
  }
}

function noteRoomUpdated(roomId) {
  for (const load of roomLoads) load.updated.add(roomId);
}

/** Room fields that room_updated carries (the rest follows messages and reads). */
const ROOM_FIELDS = ['name', 'member_count', 'role', 'participants', 'other_user', 'is_active', 'room_type', 'updated_at'];

/** The room list over REST; it replaces the one held, except for what events changed meanwhile. */
async function loadRooms() {
  const mine = session;
  const load = { arrived: new Set(), gone: new Set(), updated: new Set() };
  roomLoads.add(load);
  try {
    const answer = await api.rooms();
    if (mine !== session) return false;
    const fresh = new Map();
    for (const room of answer.rooms || []) {
      if (load.gone.has(room.id) || room.is_active === false) continue;
      const known = state.rooms.get(room.id);
      if (known) {
        // A live event may be newer than the list that was computed before it.
        if (known.last_message && (!room.last_message || known.last_message.id > room.last_message.id)) {
          room.last_message = known.last_message;
        }
        if (load.updated.has(room.id)) for (const key of ROOM_FIELDS) if (key in known) room[key] = known[key];
      }
      fresh.set(room.id, room);
    }
    // Rooms that arrived live while the list was loading.
    for (const id of load.arrived) {
      if (!fresh.has(id) && state.rooms.has(id)) fresh.set(id, state.rooms.get(id));
    }
    state.rooms = fresh;
    state.roomsLoaded = true;
    for (const roomId of Array.from(state.members.keys())) {
      if (!fresh.has(roomId)) forgetMembers(roomId);
    }
    if (state.currentRoomId !== null && !fresh.has(state.currentRoomId)) closeRoom();
    renderRoomList();
    renderConversationHeader();
    renderPanel();
    return true;
  } catch (error) {
    if (mine === session && error.status !== 401) showComposerError(`Could not load conversations: ${error.message}`);
    return false;
  } finally {
    roomLoads.delete(load);
  }
}

const roomFetches = new Set();
/** Counts membership changes; a room fetched before its room_removed must not come back. */
let membershipSeq = 0;
const removedAt = new Map();

/** A room this client does not know yet (someone wrote first, or added us). */
async function fetchRoom(roomId) {
  if (roomFetches.has(roomId)) return;
  roomFetches.add(roomId);
  const mine = session;
  const started = membershipSeq;
  try {
    const room = await api.room(roomId);
    if (mine !== session || (removedAt.get(roomId) || 0) > started) return;
    upsertRoom(room, { replace: false });
  } catch {
    // Gone again, or the network: the next reload lists it.
  } finally {
    roomFetches.delete(roomId);
  }
}

/**
 * Put a Room (room_created, room_updated, an answer) into the state. The
 * last message kept is the newer one; the unread count stays ours (events
 * replayed after this one still come and must not count twice).
 */
function upsertRoom(room, { replace = true } = {}) {
  if (!room || typeof room.id !== 'number') return;
  if (room.is_active === false) {
    dropRoom(room.id);
    return;
  }
  const known = state.rooms.get(room.id);
  if (known && !replace) return;
  const merged = known ? { ...known, ...room } : { ...room };
  if (known) {
    if (known.last_message && (!room.last_message || known.last_message.id > room.last_message.id)) {
      merged.last_message = known.last_message;
    }
    if (typeof known.unread_count === 'number') merged.unread_count = known.unread_count;
  }
  state.rooms.set(room.id, merged);
  noteRoomArrived(room.id);
  if (known) noteRoomUpdated(room.id);
  renderRoomList();
  if (room.id === state.currentRoomId) renderConversationHeader();
  if (room.id === panelRoomId()) renderPanel();
}

let noticeTimer = null;
function showNotice(text) {
  const node = $('notice');
  clearTimeout(noticeTimer);
  node.textContent = text || '';
  node.hidden = !text;
  if (text) noticeTimer = setTimeout(() => showNotice(''), NOTICE_MS);
}

/** The room is no longer ours (left, removed, inactive): it goes from everything. */
function dropRoom(roomId, notice) {
  const room = state.rooms.get(roomId);
  membershipSeq += 1;
  removedAt.set(roomId, membershipSeq);
  noteRoomGone(roomId);
  if (roomId === state.currentRoomId) closeRoom();
  forgetMembers(roomId);
  state.rooms.delete(roomId);
  state.convs.delete(roomId);
  state.drafts.delete(roomId);
  state.replyTo.delete(roomId);
  for (const [id, item] of state.scheduled) if (item.room_id === roomId) state.scheduled.delete(id);
  clearTyping(roomId);
  for (const [tempId, pending] of state.pending) {
    if (pending.roomId === roomId) {
      releasePending(pending);
      state.pending.delete(tempId);
    }
  }
  updateProgress();
  renderRoomList();
  if (room && notice !== undefined) showNotice(notice);
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
      upsertRoom(room, { replace: false });
    } catch {
      history.replaceState(null, '', location.pathname);
      return;
    }
  }
  if (!state.rooms.has(roomId)) return; // removed while it was being fetched
  if (state.currentRoomId !== roomId) {
    if (state.currentRoomId !== null) saveDraft(state.currentRoomId);
    stopTyping();
    closePanel();
    state.currentRoomId = roomId;
    state.editingId = null;
    state.confirmDeleteId = null;
    state.reactingId = null;
    state.flashId = null;
    clearMessageList();
    restoreDraft(roomId);
    socket.send('join_room', { room_id: roomId });
  }
  history.replaceState(null, '', `#room=${roomId}`);
  renderConversationHeader();
  renderRoomList();
  renderTyping();
  renderScheduled();
  renderSearchScope();
  let conv = state.convs.get(roomId);
  if (!conv) {
    conv = newConversation();
    state.convs.set(roomId, conv);
  }
  if (!conv.loaded && !conv.loading) loadFirstPage(roomId);
  else renderMessages('bottom');
  // A group's read counts come from its members' read marks.
  if (isGroup(state.rooms.get(roomId))) loadMembers(roomId).catch(() => {});
  markReadIfViewing(roomId);
  focusComposer();
}

function closeRoom() {
  if (state.currentRoomId !== null) saveDraft(state.currentRoomId);
  stopTyping();
  closePanel();
  state.currentRoomId = null;
  state.editingId = null;
  state.confirmDeleteId = null;
  state.reactingId = null;
  state.flashId = null;
  clearMessageList();
  history.replaceState(null, '', location.pathname);
  renderConversationHeader();
  renderRoomList();
  renderScheduled();
  renderSearchScope();
}

/** The newest page of a room; a load already under way is shared. */
function loadFirstPage(roomId) {
  const conv = state.convs.get(roomId);
  if (!conv.firstLoad) {
    conv.firstLoad = fetchFirstPage(roomId, conv).finally(() => {
      conv.firstLoad = null;
    });
  }
  return conv.firstLoad;
}

async function fetchFirstPage(roomId, conv) {
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

/**
 * One page of older messages of the open room; a load already under way is
 * shared. Answers false when it failed.
 */
function loadOlder(limit = 50) {
  const roomId = state.currentRoomId;
  const conv = state.convs.get(roomId);
  if (!conv || !conv.loaded || !conv.hasOlder) return Promise.resolve(true);
  if (!conv.olderLoad) {
    conv.olderLoad = fetchOlder(roomId, conv, limit).finally(() => {
      conv.olderLoad = null;
    });
  }
  return conv.olderLoad;
}

async function fetchOlder(roomId, conv, limit) {
  const before = oldestId(conv);
  if (before === null) return true;
  let ok = true;
  conv.loadingOlder = true;
  renderMessages('prepend');
  try {
    const page = await api.messagesBefore(roomId, before, limit);
    for (const message of page.messages || []) upsertMessage(message);
    conv.hasOlder = Boolean(page.has_more) && (page.messages || []).length > 0;
  } catch (error) {
    ok = false;
    showComposerError(`Could not load older messages: ${error.message}`);
  } finally {
    conv.loadingOlder = false;
  }
  if (state.currentRoomId === roomId) {
    renderMessages('prepend');
    fillViewport();
  }
  return ok;
}

/** Bumped by every jump, so that an older one gives up when a newer one starts. */
let jumpSerial = 0;
let flashTimer = null;

/**
 * Open a room and bring one of its messages into view, highlighted for a
 * moment (a reply's quote, a search result). Older history is loaded until
 * the message is there, JUMP_PAGES pages at most. Answers whether it was.
 */
async function jumpTo(roomId, messageId) {
  const mine = ++jumpSerial;
  if (state.currentRoomId !== roomId) await openRoom(roomId);
  const still = () => mine === jumpSerial && state.currentRoomId === roomId;
  const conv = state.convs.get(roomId);
  if (!still() || !conv) return false;
  if (!conv.loaded) await loadFirstPage(roomId);
  for (let page = 0; page < JUMP_PAGES && still() && conv.loaded && !conv.messages.has(messageId); page += 1) {
    const oldest = oldestId(conv);
    if (!conv.hasOlder || (oldest !== null && oldest < messageId)) break;
    if (!(await loadOlder(JUMP_PAGE))) break;
  }
  if (!still()) return false;
  if (!conv.messages.has(messageId)) {
    showComposerError('That message could not be found in this conversation.');
    return false;
  }
  clearTimeout(flashTimer);
  state.flashId = messageId;
  renderMessages();
  const node = document.querySelector(`[data-testid="message"][data-id="${messageId}"]`);
  if (node) node.scrollIntoView({ block: 'center' });
  flashTimer = setTimeout(() => {
    if (state.flashId !== messageId) return;
    state.flashId = null;
    renderMessages();
  }, FLASH_MS);
  return true;
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

/**
 * State of the event stream that lives as long as a session: a resync the
 * server asked for (done once the `synced` after it arrives), and whether
 * one is still owed because its reload failed.
 */
let resyncAsked = false;
let resyncOwed = false;

function resetLiveState() {
  resyncAsked = false;
  resyncOwed = false;
  connectCursor = null;
  catchUpMarks.clear();
  removedAt.clear();
  clearTimeout(noticeTimer);
  showNotice('');
}

function handleOpen() {
  if (state.currentRoomId !== null) socket.send('join_room', { room_id: state.currentRoomId });
  if (connectCursor) {
    // The server replays every event after the cursor, then sends `synced`:
    // nothing to fetch over REST (SPEC section 9).
    state.syncing = true;
    catchUpMarks.clear();
  } else {
    // No cursor yet (the first connection; or a server without an event
    // stream): fetch the room list, and what the open conversations missed,
    // from where each stood before this link delivers anything (including
    // the echoes of the pending messages re-sent just below).
    for (const [roomId, conv] of state.convs) {
      if (!conv.loaded) continue;
      const mark = newestId(conv);
      const earlier = catchUpMarks.get(roomId);
      catchUpMarks.set(roomId, earlier === undefined || earlier === null || mark === null ? (earlier ?? mark) : Math.min(earlier, mark));
    }
  }
  const waiting = Array.from(state.pending.values())
    .filter((p) => p.status === 'sending' && p.data)
    .sort((a, b) => a.createdAt - b.createdAt);
  for (const pending of waiting) transmit(pending);
  if (!connectCursor) catchUp();
}

/** `synced`: the replay (if any) is over; from here on everything is live. */
function onSynced(data) {
  if (typeof data.cursor === 'string' && data.cursor) saveCursor(data.cursor);
  const replayed = state.syncing;
  state.syncing = false;
  // Scheduled items are not events: what came due or was cancelled meanwhile shows in the list.
  loadScheduled();
  if (resyncAsked || resyncOwed) {
    resyncAsked = false;
    resync();
    return;
  }
  if (replayed) {
    // Presence is not stored: ask who is online now.
    refreshPresence();
    const current = state.currentRoomId;
    if (current !== null) {
      renderMessages();
      markReadIfViewing(current);
    }
  }
}

/**
 * `resync_required` was answered (the cursor was too old or unreadable):
 * reload the rooms and the open conversation over REST. Runs after the
 * `synced` that follows, so that what the REST answers hold reaches at least
 * as far as that cursor; live events after it keep applying meanwhile.
 */
async function resync() {
  resyncOwed = true;
  const mine = session;
  const current = state.currentRoomId;
  // Conversations may have missed anything: drop them, reload the one on screen.
  state.convs = new Map();
  for (const roomId of Array.from(state.members.keys())) {
    if (roomId !== current) state.members.delete(roomId);
  }
  if (current !== null) {
    state.convs.set(current, newConversation());
    clearMessageList();
    loadFirstPage(current);
  }
  const ok = await loadRooms();
  if (mine !== session) return;
  if (current !== null && state.rooms.has(current) && isGroup(state.rooms.get(current))) {
    loadMembers(current, { force: true }).catch(() => {});
  }
  refreshPresence();
  if (ok) resyncOwed = false;
}

/** Who is online now, for every person shown (presence events are not replayed). */
async function refreshPresence() {
  const mine = session;
  try {
    const answer = await api.onlineUsers();
    if (mine !== session) return;
    const online = new Set((answer.users || []).map((u) => u.id));
    const known = new Set();
    for (const room of state.rooms.values()) {
      if (room.other_user) known.add(room.other_user.id);
      for (const u of room.participants || []) known.add(u.id);
    }
    for (const members of state.members.values()) for (const id of members.byId.keys()) known.add(id);
    if (state.me) known.delete(state.me.id);
    for (const id of known) setPresence(id, online.has(id));
    renderRoomList();
    renderConversationHeader();
    renderPanel();
  } catch {
    // Presence events correct it as they come.
  }
}

/** room id → the newest message id known to be contiguous before a (re)connect. */
const catchUpMarks = new Map();
let catchUpRunning = null;
let catchUpAgain = false;

/** After connecting without a cursor: the room list, then every open conversation from its mark on. */
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

/**
 * Every frame from the server. A stored event carries a top-level `cursor`;
 * it is kept once the event is processed, so that a reconnect resumes
 * right after it.
 */
function handleEvent(event) {
  try {
    dispatch(event);
  } finally {
    if (typeof event.cursor === 'string' && event.cursor) saveCursor(event.cursor);
  }
}

function dispatch(event) {
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
    case 'message_reaction':
      applyReactionEvent(data);
      break;
    case 'message_scheduled':
      onScheduled(data);
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
      renderPanel();
      break;
    case 'room_created':
      upsertRoom(data);
      break;
    case 'room_updated':
      onRoomUpdated(data);
      break;
    case 'member_added':
      onMemberAdded(data);
      break;
    case 'member_removed':
      onMemberRemoved(data);
      break;
    case 'room_removed':
      onRoomRemoved(data);
      break;
    case 'synced':
      onSynced(data);
      break;
    case 'resync_required':
      resyncAsked = true;
      break;
    case 'error':
      onServerError(event);
      break;
    default:
      // room_joined, room_left, pong, and whatever a newer server adds.
      break;
  }
}

function onRoomUpdated(room) {
  const known = state.rooms.get(room.id);
  if (!known) {
    upsertRoom(room);
    return;
  }
  const roleChanged = known.role !== room.role;
  upsertRoom(room);
  // Roles of others may have changed too: the member list says.
  const members = state.members.get(room.id);
  if (members && (members.complete || roleChanged)) loadMembers(room.id, { force: true }).catch(() => {});
}

function onMemberAdded(data) {
  const roomId = data.room_id;
  const users = Array.isArray(data.users) ? data.users : [];
  const room = state.rooms.get(roomId);
  if (!room) {
    // We were added: the room comes over REST (it may also come as room_created).
    membershipSeq += 1;
    removedAt.delete(roomId);
    fetchRoom(roomId);
    return;
  }
  const members = state.members.get(roomId);
  const fresh = users.filter((u) => !(members && members.byId.has(u.id))
    && !(room.participants || []).some((p) => p.id === u.id));
  applyMemberAdded(roomId, users);
  if (members && members.complete) syncMemberCount(roomId);
  else room.member_count = (Number(room.member_count) || 0) + fresh.length;
  const participants = room.participants || [];
  for (const user of fresh) if (participants.length < 20) participants.push(user);
  room.participants = participants;
  afterMembersChanged(roomId);
}

function onMemberRemoved(data) {
  const roomId = data.room_id;
  if (state.me && data.user_id === state.me.id) {
    dropRoom(roomId, membershipNotice(roomId));
    return;
  }
  const room = state.rooms.get(roomId);
  if (!room) return;
  const members = state.members.get(roomId);
  const known = (members && members.byId.has(data.user_id)) || (room.participants || []).some((p) => p.id === data.user_id);
  applyMemberRemoved(roomId, data.user_id);
  if (members && members.complete) syncMemberCount(roomId);
  else if (known || !members) room.member_count = Math.max(0, (Number(room.member_count) || 0) - 1);
  room.participants = (room.participants || []).filter((p) => p.id !== data.user_id);
  clearTyping(roomId, data.user_id);
  afterMembersChanged(roomId);
}

function membershipNotice(roomId) {
  const room = state.rooms.get(roomId);
  return `You are no longer a member of ${room && room.name ? `“${room.name}”` : 'that group'}.`;
}

function onRoomRemoved(data) {
  dropRoom(data.room_id, leftNotice(data.room_id) || membershipNotice(data.room_id));
}

/** Members or their read marks changed: the header, the panel and the read counts follow. */
function afterMembersChanged(roomId) {
  renderRoomList();
  if (roomId === state.currentRoomId) {
    renderConversationHeader();
    renderMessages();
  }
  if (roomId === panelRoomId()) renderPanel();
}

function onNewMessage(message) {
  if (typeof message.id !== 'number' || typeof message.room_id !== 'number') return;
  const roomId = message.room_id;
  const own = isOwn(message);
  if (message.local_temp_id && state.pending.has(message.local_temp_id)) {
    const pending = state.pending.get(message.local_temp_id);
    state.pending.delete(message.local_temp_id);
    releasePending(pending);
    updateProgress();
    // A server that does not schedule posts it at once.
    if (pending.sendAt) renderScheduled();
  }
  if (own) onDelivered(message);
  const conv = state.convs.get(roomId);
  const known = conv && conv.messages.has(message.id);
  upsertMessage(message);

  const room = state.rooms.get(roomId);
  if (!room) {
    fetchRoom(roomId);
  } else {
    // Newer than anything the room list has seen: a replayed or repeated
    // message (already in a room object or page) counts as unread once only.
    const newer = !room.last_message || room.last_message.id < message.id;
    if (!room.last_message || room.last_message.id <= message.id) {
      room.last_message = message;
      room.updated_at = message.created_at;
    }
    if (!own && !known && newer && !message.is_read) {
      if (isViewing(roomId)) markRead(roomId);
      else room.unread_count = (Number(room.unread_count) || 0) + 1;
    }
  }
  if (!own && message.sender_details) clearTyping(roomId, message.sender_details.id);
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
  refreshQuotes(message.room_id, message.id, message);
  renderRoomList();
  if (message.room_id === state.currentRoomId) renderMessages();
}

function onMessageDelete(data) {
  patchMessage(data.room_id, data.id, { content: '', files_data: null, is_deleted: true });
  refreshQuotes(data.room_id, data.id, { is_deleted: true });
  if (state.editingId === data.id) state.editingId = null;
  if (state.confirmDeleteId === data.id) state.confirmDeleteId = null;
  if (state.reactingId === data.id) state.reactingId = null;
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
  const upTo = typeof data.last_read_id === 'number' ? data.last_read_id : null;
  const room = state.rooms.get(roomId);
  applyRead(roomId, data.user_id, upTo);
  if (state.me && data.user_id === state.me.id) {
    // Read in another tab of ours (or our own mark coming back).
    const last = room && room.last_message;
    if (room && (upTo === null || !last || last.id <= upTo || isOwn(last))) room.unread_count = 0;
    renderRoomList();
    return;
  }
  const conv = state.convs.get(roomId);
  const reached = (message) => isOwn(message) && (upTo === null || message.id <= upTo);
  if (isGroup(room)) {
    // Read counts come from the members' marks (applyRead above); without
    // the whole member list, fetch it rather than guess.
    const members = state.members.get(roomId);
    if (conv && conv.loaded && (!members || (!members.complete && !members.loading))) loadMembers(roomId).catch(() => {});
  } else {
    if (conv) {
      for (const message of conv.messages.values()) {
        if (reached(message) && !message.is_read) {
          conv.messages.set(message.id, { ...message, is_read: true, read_count: Math.max(1, Number(message.read_count) || 0) });
        }
      }
    }
    if (room && room.last_message && reached(room.last_message)) room.last_message = { ...room.last_message, is_read: true };
  }
  if (roomId === state.currentRoomId) renderMessages();
}

function onTyping(data) {
  if (!state.me || data.user_id === state.me.id) return;
  const roomId = data.room_id;
  if (data.is_typing) {
    let typers = state.typing.get(roomId);
    if (!typers) {
      typers = new Map();
      state.typing.set(roomId, typers);
    }
    const previous = typers.get(data.user_id);
    if (previous) clearTimeout(previous.timer);
    const room = state.rooms.get(roomId);
    const name = data.user_name || (room && room.other_user && room.other_user.name) || 'Someone';
    typers.set(data.user_id, {
      userName: name,
      timer: setTimeout(() => clearTyping(roomId, data.user_id), TYPING_SHOWN_MS),
    });
    renderTyping();
    renderRoomList();
  } else {
    clearTyping(roomId, data.user_id);
  }
}

/** Stop showing one person (or, without `userId`, everyone) typing in a room. */
function clearTyping(roomId, userId) {
  const typers = state.typing.get(roomId);
  if (!typers) return;
  for (const [id, entry] of typers) {
    if (userId !== undefined && id !== userId) continue;
    clearTimeout(entry.timer);
    typers.delete(id);
  }
  if (typers.size === 0) state.typing.delete(roomId);
  renderTyping();
  renderRoomList();
}

function onServerError(event) {
  const text = event.message || (event.data && event.data.message) || 'The server refused the request';
  const tempId = event.local_temp_id ?? (event.data && event.data.local_temp_id) ?? null;
  const pending = tempId ? state.pending.get(tempId) : null;
  if (pending) {
    failPending(pending, text);
  } else if (!tempId) {
    showComposerError(text);
  }
  // An error about a message no longer pending answers a re-send of one
  // that arrived meanwhile (its uploads are used up by then) or was
  // discarded: nothing to tell.
}

/**
 * A pending message the server refused, or whose files could not go up:
 * a scheduled one leaves (its text goes back into an empty composer rather
 * than being lost); another stays with Retry and Discard.
 */
function failPending(pending, text) {
  if (pending.sendAt) {
    state.pending.delete(pending.tempId);
    releasePending(pending);
    if (pending.roomId === state.currentRoomId && !$('composer-input').value) $('composer-input').value = pending.content;
    renderScheduled();
  } else {
    pending.status = 'failed';
    pending.error = text;
    pending.stage = null;
    if (pending.roomId === state.currentRoomId) renderMessages();
  }
  updateProgress();
  showComposerError(pending.sendAt ? `Not scheduled: ${text}` : text);
}

/** `message_scheduled`: the message waits on the server now; it leaves the pending ones. */
function onScheduled(data) {
  const tempId = data.local_temp_id;
  const pending = tempId ? state.pending.get(tempId) : null;
  if (pending) state.pending.delete(tempId);
  onMessageScheduled(data, pending);
}

// ------------------------------------------------------------- sending

/**
 * Called by the composer with what to send; shows it as pending at once (a
 * scheduled one in the composer's list of scheduled messages). Files go up
 * as uploads first (uploads.js); the frame then names them by `upload_id`.
 * `replyTo` is the `reply_to` shape of the answered message, `sendAt` an
 * RFC 3339 time.
 */
function submitMessage({ roomId, content, items, replyTo = null, sendAt = null }) {
  const room = state.rooms.get(roomId);
  if (!room) return;
  const tempId = newTempId();
  const pending = {
    tempId,
    roomId,
    content,
    messageType: chooseMessageType(items),
    replyTo,
    sendAt,
    createdAt: Date.now(),
    status: 'sending',
    stage: items.length > 0 ? 'uploading' : 'queued',
    error: null,
    data: null,
    /** The composer's attachment items, kept for a retry. */
    items,
    /** One per file: what the pending message shows, and how far its upload is. */
    previews: items.map((item) => ({
      name: item.name,
      size: item.size,
      category: item.category,
      url: item.category === 'image' ? URL.createObjectURL(item.file) : null,
      loaded: 0,
      /** The upload once created, and its id once complete. */
      upload: null,
      uploadId: null,
    })),
    /** Cancels the uploads under way (discard, sign-out). */
    abort: null,
  };
  state.pending.set(tempId, pending);
  if (sendAt) renderScheduled();
  else if (roomId === state.currentRoomId) renderMessages('bottom');
  uploadAndSend(pending);
}

/** Upload what is not uploaded yet, then send the frame. */
async function uploadAndSend(pending) {
  if (pending.items.length > 0 && !(await uploadFiles(pending))) return;
  const room = state.rooms.get(pending.roomId);
  const other = room ? room.other_user || null : null;
  pending.data = {
    room_id: pending.roomId,
    receiver_id: other ? other.id : undefined,
    message_type: pending.messageType,
    content: pending.content,
    local_temp_id: pending.tempId,
    files_data: pending.items.length > 0
      ? pending.items.map((item, index) => {
        const entry = { upload_id: pending.previews[index].uploadId };
        if (typeof item.duration === 'number') entry.duration = item.duration;
        return entry;
      })
      : null,
  };
  if (pending.replyTo) pending.data.reply_to_id = pending.replyTo.id;
  if (pending.sendAt) pending.data.send_at = pending.sendAt;
  transmit(pending);
}

/**
 * The pending message's files, one after another; answers whether all are
 * up and the message is still wanted. A refusal or a connection that stays
 * away fails the message (Retry goes on with the files not yet uploaded).
 */
async function uploadFiles(pending) {
  const controller = new AbortController();
  pending.abort = controller;
  pending.stage = 'uploading';
  updateProgress();
  try {
    for (const [index, item] of pending.items.entries()) {
      const preview = pending.previews[index];
      if (preview.uploadId) continue;
      const answer = await uploadFile(item.file, {
        name: item.name,
        mime: item.mime,
        signal: controller.signal,
        // A retry goes on with the upload an earlier attempt started.
        resume: preview.upload,
        onCreated: (upload) => {
          preview.upload = upload;
        },
        onProgress: (bytes) => {
          preview.loaded = bytes;
          updateProgress();
        },
      });
      preview.uploadId = answer.upload_id;
      preview.loaded = preview.size;
    }
  } catch (error) {
    if (!isAbort(error) && state.pending.has(pending.tempId)) failPending(pending, error.message);
    return false;
  } finally {
    if (pending.abort === controller) pending.abort = null;
  }
  return state.pending.has(pending.tempId);
}

function transmit(pending) {
  pending.stage = socket.send('send_message', pending.data) ? 'sending' : 'queued';
  updateProgress();
  if (pending.sendAt) renderScheduled();
  else updatePendingStatus(pending);
}

/**
 * The composer's progress line: the bytes of the uploads under way, then
 * the wait for the echo of what they were for. Each pending message shows
 * its own files' progress (updatePendingStatus).
 */
function updateProgress() {
  const withFiles = Array.from(state.pending.values()).filter((p) => p.status === 'sending' && p.previews.length > 0);
  const uploading = withFiles.filter((p) => p.stage === 'uploading');
  for (const pending of uploading) updatePendingStatus(pending);
  if (uploading.length > 0) {
    let total = 0;
    let loaded = 0;
    for (const pending of uploading) {
      for (const preview of pending.previews) {
        total += preview.size;
        loaded += Math.min(preview.loaded, preview.size);
      }
    }
    const fraction = loaded / Math.max(total, 1);
    setProgress(fraction, `Uploading… ${Math.round(fraction * 100)}%`);
  } else if (withFiles.some((p) => p.stage === 'queued')) {
    setProgress(1, 'Uploaded, waiting for the connection…');
  } else if (withFiles.length > 0) {
    setProgress(1, 'Sent, waiting for the server…');
  } else {
    setProgress(null);
  }
}

function retryPending(tempId) {
  const pending = state.pending.get(tempId);
  if (!pending) return;
  pending.status = 'sending';
  pending.error = null;
  hideComposerError();
  if (pending.data) transmit(pending);
  else uploadAndSend(pending);
  if (pending.roomId === state.currentRoomId) renderMessages();
}

/** Drop a pending message (cancelled or given up); its uploads under way stop. */
function discardPending(tempId) {
  const pending = state.pending.get(tempId);
  if (!pending) return;
  state.pending.delete(tempId);
  releasePending(pending);
  updateProgress();
  hideComposerError();
  if (pending.sendAt) renderScheduled();
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
    refreshQuotes(message.room_id, message.id, message);
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
    refreshQuotes(message.room_id, message.id, { is_deleted: true });
    state.confirmDeleteId = null;
    renderRoomList();
    if (message.room_id === state.currentRoomId) renderMessages();
  } catch (error) {
    showComposerError(error.message);
  }
}

// ---------------------------------------------------------------- search

/** The sidebar's people search: debounced, three characters at least (SPEC section 2). */
const sidebarSearch = userSearch((result) => {
  if (result.state === 'idle') renderSearchResults(null);
  else if (result.state === 'short') renderSearchResults({ note: 'Type at least 3 characters of an email.', users: [] });
  else if (result.state === 'loading') renderSearchResults({ loading: true, note: result.error, users: [] });
  else if (result.state === 'error') renderSearchResults({ error: result.error, users: [] });
  else renderSearchResults({ users: result.users });
}, { delay: 250 });

function onSearchInput() {
  sidebarSearch.input($('search-input').value);
}

async function startChatWith(user) {
  try {
    const room = await api.createRoom(user.id);
    upsertRoom(room);
    $('search-input').value = '';
    sidebarSearch.cancel();
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
  loadOlder: () => loadOlder(),
  togglePicker,
  startReply,
  openForward: (message) => openForwardDialog(message),
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
    sidebarSearch.now($('search-input').value);
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
        && document.activeElement !== $('search-input')
        && !$('new-group-dialog').open && !isForwardOpen() && !isLightboxOpen() && !isShareOpen()
        && panelRoomId() === null) {
      closeRoom();
    }
  });
  initComposer({ submit: submitMessage, socket, getRoomId: () => state.currentRoomId });
  const redraw = (roomId) => {
    if (roomId === state.currentRoomId) renderMessages();
  };
  initReactions({ changed: redraw, showError: showComposerError });
  initReplies({ jumpTo: (roomId, messageId) => jumpTo(roomId, messageId) });
  initForward({ arrived: (message) => onNewMessage(message), notice: showNotice });
  initSearch({ openMessage: (roomId, messageId) => jumpTo(roomId, messageId) });
  initSchedule({ showError: showComposerError });
  initLightbox();
  initShare();
  initGroups({
    upsertRoom: (room) => upsertRoom(room),
    dropRoom: (roomId, notice) => dropRoom(roomId, notice),
    openRoom: (roomId) => openRoom(roomId),
    membersChanged: (roomId) => afterMembersChanged(roomId),
  });
}

/** Hooks for the browser tests; harmless for people. */
window.__chatd = {
  dropSocket: () => socket.drop(),
  simulateOffline: (ms) => socket.simulateOffline(ms),
  connection: () => state.connection,
  pendingCount: () => state.pending.size,
  cursor: () => state.cursor,
  syncing: () => state.syncing,
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
