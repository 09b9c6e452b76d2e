// The client's state and the pure operations on it. No DOM, no network.

export const state = {
  me: null,
  /** room id → Room (SPEC section 2) */
  rooms: new Map(),
  roomsLoaded: false,
  /** The room whose conversation is shown, or null. */
  currentRoomId: null,
  /** room id → Conversation (see newConversation) */
  convs: new Map(),
  /** local_temp_id → Pending (see app.js submitMessage) */
  pending: new Map(),
  /** room id → Map(user id → {userName, timer}) of the others typing there */
  typing: new Map(),
  /** room id → Members (see newMembers): a group's member list, once asked for */
  members: new Map(),
  /** The cursor of the last processed stored event (SPEC section 9), or null. */
  cursor: null,
  /** Connected with a cursor and the replay is not over yet (no `synced` so far). */
  syncing: false,
  /** room id → {text, attachments} kept while switching rooms */
  drafts: new Map(),
  /** id of the message being edited inline, and of the one asking to be deleted */
  editingId: null,
  confirmDeleteId: null,
  /** id of the message whose reaction picker is open */
  reactingId: null,
  /** room id → the `reply_to` shape of the message the composer answers */
  replyTo: new Map(),
  /** id of the message briefly highlighted after a jump to it */
  flashId: null,
  /** scheduled item id → {id, room_id, message_type, content, send_at, local_temp_id} (SPEC section 10) */
  scheduled: new Map(),
  connection: 'connecting',
};

export function resetState() {
  for (const typers of state.typing.values()) for (const entry of typers.values()) clearTimeout(entry.timer);
  for (const pending of state.pending.values()) releasePending(pending);
  state.me = null;
  state.rooms = new Map();
  state.roomsLoaded = false;
  state.currentRoomId = null;
  state.convs = new Map();
  state.pending = new Map();
  state.typing = new Map();
  state.members = new Map();
  state.cursor = null;
  state.syncing = false;
  state.drafts = new Map();
  state.editingId = null;
  state.confirmDeleteId = null;
  state.reactingId = null;
  state.replyTo = new Map();
  state.flashId = null;
  state.scheduled = new Map();
  state.connection = 'connecting';
}

/** A pending message goes: its uploads under way stop, its previews' blob URLs are freed. */
export function releasePending(pending) {
  if (pending.abort) pending.abort.abort();
  pending.abort = null;
  for (const f of pending.previews || []) {
    if (f.url) URL.revokeObjectURL(f.url);
  }
}

export function newConversation() {
  return {
    /** message id → Message */
    messages: new Map(),
    loaded: false,
    loading: false,
    /** Older messages exist on the server (before the oldest loaded). */
    hasOlder: false,
    loadingOlder: false,
    /** The loads under way (promises), shared by whoever waits for them. */
    firstLoad: null,
    olderLoad: null,
    error: null,
  };
}

export function isOwn(message) {
  if (!message || !state.me) return false;
  const sender = message.sender_details;
  if (sender && typeof sender.id === 'number') return sender.id === state.me.id;
  return Boolean(message.is_sender);
}

export function oldestId(conv) {
  let min = null;
  for (const id of conv.messages.keys()) if (min === null || id < min) min = id;
  return min;
}

export function newestId(conv) {
  let max = null;
  for (const id of conv.messages.keys()) if (max === null || id > max) max = id;
  return max;
}

export function sortedMessages(conv) {
  return Array.from(conv.messages.values()).sort((a, b) => a.id - b.id);
}

/**
 * Put a message into its conversation, when the conversation is loaded or
 * loading (a live message that arrives during the first page is kept).
 */
export function upsertMessage(message) {
  const conv = state.convs.get(message.room_id);
  if (!conv) return;
  const previous = conv.messages.get(message.id);
  if (previous && previous.is_deleted && !message.is_deleted) return; // deletion is final
  conv.messages.set(message.id, previous ? { ...previous, ...message } : message);
}

export function findMessage(roomId, messageId) {
  const conv = state.convs.get(roomId);
  const fromConv = conv ? conv.messages.get(messageId) : undefined;
  if (fromConv) return fromConv;
  const room = state.rooms.get(roomId);
  if (room && room.last_message && room.last_message.id === messageId) return room.last_message;
  return undefined;
}

/** Apply a change to a message wherever it is kept (conversation and room preview). */
export function patchMessage(roomId, messageId, change) {
  const conv = state.convs.get(roomId);
  if (conv && conv.messages.has(messageId)) {
    const current = conv.messages.get(messageId);
    conv.messages.set(messageId, { ...current, ...(typeof change === 'function' ? change(current) : change) });
  }
  const room = state.rooms.get(roomId);
  if (room && room.last_message && room.last_message.id === messageId) {
    const current = room.last_message;
    room.last_message = { ...current, ...(typeof change === 'function' ? change(current) : change) };
  }
}

function activityTime(room) {
  const stamp = (room.last_message && room.last_message.created_at) || room.updated_at || room.created_at;
  const t = Date.parse(stamp || '');
  return Number.isNaN(t) ? 0 : t;
}

export function sortedRooms() {
  return Array.from(state.rooms.values()).sort((a, b) => {
    const diff = activityTime(b) - activityTime(a);
    if (diff !== 0) return diff;
    const la = a.last_message ? a.last_message.id : 0;
    const lb = b.last_message ? b.last_message.id : 0;
    return lb - la || b.id - a.id;
  });
}

export function isGroup(room) {
  return Boolean(room) && room.room_type === 'group';
}

/** The room's other participant (the Room object has it; fall back to participants). None for a group. */
export function otherUser(room) {
  if (!room || isGroup(room)) return null;
  if (room.other_user) return room.other_user;
  const others = (room.participants || []).filter((u) => !state.me || u.id !== state.me.id);
  return others[0] || null;
}

/** What a room is called in the list and the header: the group's name, else the other person's. */
export function roomTitle(room) {
  if (!room) return '';
  if (isGroup(room)) return room.name || 'Group';
  const other = otherUser(room);
  return (other && other.name) || room.name || 'Conversation';
}

/** Whom the room's avatar shows: the other person, or the group itself (initials of its name). */
export function roomAvatarUser(room) {
  if (isGroup(room)) return { id: room.id + 7, name: room.name || 'Group', avatar_url: null, is_online: false };
  return otherUser(room) || { id: 0, name: roomTitle(room), is_online: false };
}

/** The member list of a group as far as it is loaded. */
export function newMembers() {
  return {
    /** user id → User + role + last_read_id, in the server's order (by user id) */
    byId: new Map(),
    total: 0,
    /** Every member is loaded (the read counts are computed from them). */
    complete: false,
    loading: null,
    error: null,
  };
}

/** How many readers a message's tooltip names (the count covers the rest). */
const READERS_NAMED = 10;

/**
 * Read count and "read by all" of a message in a group, computed from the
 * members' `last_read_id` when the whole list is loaded (it stays right
 * under replays and repeated `message_read`), else the server's figures.
 */
export function readInfo(message) {
  const room = state.rooms.get(message.room_id);
  const members = state.members.get(message.room_id);
  const senderId = message.sender_details ? message.sender_details.id : null;
  if (isGroup(room) && members && members.complete) {
    let count = 0;
    let others = 0;
    const names = [];
    for (const member of members.byId.values()) {
      if (member.id === senderId) continue;
      others += 1;
      if ((Number(member.last_read_id) || 0) >= message.id) {
        count += 1;
        if (names.length < READERS_NAMED) names.push(member.name);
      }
    }
    return { count, all: others > 0 && count === others, names };
  }
  const count = typeof message.read_count === 'number' ? message.read_count : message.is_read ? 1 : 0;
  return { count, all: Boolean(message.is_read), names: null };
}

/** Set a user's presence everywhere it is shown. */
export function setPresence(userId, isOnline) {
  for (const members of state.members.values()) {
    const member = members.byId.get(userId);
    if (member) members.byId.set(userId, { ...member, is_online: isOnline });
  }
  for (const room of state.rooms.values()) {
    if (room.other_user && room.other_user.id === userId) room.other_user = { ...room.other_user, is_online: isOnline };
    if (Array.isArray(room.participants)) {
      room.participants = room.participants.map((u) => (u.id === userId ? { ...u, is_online: isOnline } : u));
    }
  }
}

/** One line for the room list. */
export function previewText(message) {
  if (!message) return 'No messages yet';
  if (message.is_deleted) return 'Message deleted';
  let own = isOwn(message) ? 'You: ' : '';
  const room = state.rooms.get(message.room_id);
  if (!own && isGroup(room) && message.sender_details && message.sender_details.name) {
    own = `${String(message.sender_details.name).trim().split(/\s+/)[0]}: `;
  }
  const files = Array.isArray(message.files_data) ? message.files_data : [];
  const caption = (message.content || '').split('\n')[0];
  let body;
  switch (message.message_type) {
    case 'image':
      body = files.length > 1 ? `${files.length} photos` : 'Photo';
      break;
    case 'voice':
      body = 'Voice message';
      break;
    case 'file':
      body = files.length > 1 ? `${files.length} files` : (files[0] && files[0].file_name) || 'File';
      break;
    default:
      body = null;
  }
  if (body === null) return own + caption;
  return own + (caption ? `${body} · ${caption}` : body);
}

/** Who is typing in a room, as one line ("Ann is typing…"), or ''. */
export function typingText(roomId) {
  const typers = state.typing.get(roomId);
  if (!typers || typers.size === 0) return '';
  const names = Array.from(typers.values()).map((t) => t.userName);
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return `${names.length} people are typing…`;
}

export function totalUnread() {
  let sum = 0;
  for (const room of state.rooms.values()) sum += Number(room.unread_count) || 0;
  return sum;
}
