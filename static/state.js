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
  /** local_temp_id → Pending (see app.js sendMessage) */
  pending: new Map(),
  /** room id → {userId, userName, timer} of the other participant typing */
  typing: new Map(),
  /** room id → {text, attachments} kept while switching rooms */
  drafts: new Map(),
  /** id of the message being edited inline, and of the one asking to be deleted */
  editingId: null,
  confirmDeleteId: null,
  connection: 'connecting',
};

export function resetState() {
  for (const entry of state.typing.values()) clearTimeout(entry.timer);
  for (const pending of state.pending.values()) revokePreviews(pending);
  state.me = null;
  state.rooms = new Map();
  state.roomsLoaded = false;
  state.currentRoomId = null;
  state.convs = new Map();
  state.pending = new Map();
  state.typing = new Map();
  state.drafts = new Map();
  state.editingId = null;
  state.confirmDeleteId = null;
  state.connection = 'connecting';
}

export function revokePreviews(pending) {
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

/** The room's other participant (the Room object has it; fall back to participants). */
export function otherUser(room) {
  if (!room) return null;
  if (room.other_user) return room.other_user;
  const others = (room.participants || []).filter((u) => !state.me || u.id !== state.me.id);
  return others[0] || null;
}

/** Set a user's presence everywhere it is shown. */
export function setPresence(userId, isOnline) {
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
  const own = isOwn(message) ? 'You: ' : '';
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

export function totalUnread() {
  let sum = 0;
  for (const room of state.rooms.values()) sum += Number(room.unread_count) || 0;
  return sum;
}
