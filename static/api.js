// REST client for chatd (SPEC sections 1, 2, 8, 10 and 11). Holds the token;
// every call answers parsed JSON or throws an ApiError with the server's detail.

const TOKEN_KEY = 'chatd.token';

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
  }
}

let token = null;
try {
  token = localStorage.getItem(TOKEN_KEY);
} catch {
  token = null;
}
let onUnauthorized = () => {};

export function getToken() {
  return token;
}

export function setToken(value) {
  token = value;
  try {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // Private mode without storage: the session lasts as long as the tab.
  }
}

/** Called when an authenticated request answers 401 (expired or revoked token). */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

/** For requests made elsewhere (uploads.js): an authenticated one answered 401. */
export function reportUnauthorized() {
  onUnauthorized();
}

/** FastAPI's 422 detail may be a list of {loc, msg}; make it one sentence. */
function detailText(body, status) {
  const detail = body && body.detail;
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => (d && (d.msg || d.message)) || JSON.stringify(d)).join('; ');
  }
  if (detail && typeof detail === 'object') return JSON.stringify(detail);
  return `Request failed (HTTP ${status})`;
}

async function request(method, path, body, { auth = true } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (auth && token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'Network error: the server cannot be reached');
  }
  let parsed = null;
  const text = await response.text();
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = null;
    }
  }
  if (!response.ok) {
    if (response.status === 401 && auth) onUnauthorized();
    throw new ApiError(response.status, detailText(parsed, response.status));
  }
  return parsed;
}

const q = (params) => {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null) search.set(k, String(v));
  }
  return search.toString();
};

export const api = {
  register: (name, email, password) =>
    request('POST', '/api/auth/register', { name, email, password }, { auth: false }),
  login: (email, password) => request('POST', '/api/auth/login', { email, password }, { auth: false }),
  me: () => request('GET', '/api/auth/me'),

  searchUsers: (email, limit = 20) => request('GET', `/api/chat/search-users?${q({ email, limit })}`),
  createRoom: (receiverId) => request('POST', '/api/chat/rooms', { receiver_id: receiverId }),
  createGroup: (name, memberIds) => request('POST', '/api/chat/rooms', { name, member_ids: memberIds }),
  rooms: () => request('GET', '/api/chat/rooms'),
  room: (roomId) => request('GET', `/api/chat/rooms/${encodeURIComponent(roomId)}`),

  /** Newest page: {messages (oldest first), has_more, ...}. */
  messagesPage: (roomId, page = 1, perPage = 50) =>
    request('GET', `/api/chat/rooms/${encodeURIComponent(roomId)}/messages?${q({ page, per_page: perPage })}`),
  messagesBefore: (roomId, beforeId, limit = 50) =>
    request('GET', `/api/chat/rooms/${encodeURIComponent(roomId)}/messages?${q({ before_id: beforeId, limit })}`),
  messagesAfter: (roomId, afterId, limit = 100) =>
    request('GET', `/api/chat/rooms/${encodeURIComponent(roomId)}/messages?${q({ after_id: afterId, limit })}`),

  markRead: (roomId) => request('POST', `/api/chat/rooms/${encodeURIComponent(roomId)}/read`),
  editMessage: (messageId, content) =>
    request('PUT', `/api/chat/messages/${encodeURIComponent(messageId)}`, { content }),
  deleteMessage: (messageId) => request('DELETE', `/api/chat/messages/${encodeURIComponent(messageId)}`),
  onlineUsers: () => request('GET', '/api/chat/online-users'),

  // Groups (SPEC section 8).
  members: (roomId, afterId, limit = 100) =>
    request('GET', `/api/chat/rooms/${encodeURIComponent(roomId)}/members?${q({ limit, after_id: afterId })}`),
  addMembers: (roomId, userIds) =>
    request('POST', `/api/chat/rooms/${encodeURIComponent(roomId)}/members`, { user_ids: userIds }),
  removeMember: (roomId, userId) =>
    request('DELETE', `/api/chat/rooms/${encodeURIComponent(roomId)}/members/${encodeURIComponent(userId)}`),
  setRole: (roomId, userId, role) =>
    request('PATCH', `/api/chat/rooms/${encodeURIComponent(roomId)}/members/${encodeURIComponent(userId)}`, { role }),
  renameRoom: (roomId, name) => request('PATCH', `/api/chat/rooms/${encodeURIComponent(roomId)}`, { name }),

  like: (messageId) => request('POST', `/api/chat/messages/${encodeURIComponent(messageId)}/like`),
  unlike: (messageId) => request('DELETE', `/api/chat/messages/${encodeURIComponent(messageId)}/like`),

  // Messages people expect (SPEC section 10).
  react: (messageId, emoji) =>
    request('POST', `/api/chat/messages/${encodeURIComponent(messageId)}/reactions`, { emoji }),
  unreact: (messageId, emoji) =>
    request('DELETE', `/api/chat/messages/${encodeURIComponent(messageId)}/reactions/${encodeURIComponent(emoji)}`),
  forward: (messageId, roomIds) =>
    request('POST', `/api/chat/messages/${encodeURIComponent(messageId)}/forward`, { room_ids: roomIds }),
  /** {results: [{message, highlight}], next_before_id}, newest first. */
  searchMessages: (text, { roomId, beforeId, limit = 20 } = {}) =>
    request('GET', `/api/chat/search?${q({ q: text, room_id: roomId, before_id: beforeId, limit })}`),
  scheduled: () => request('GET', '/api/chat/scheduled'),

  // Files (SPEC section 11); uploads themselves go through uploads.js.
  /** {url, expires_at}: a signed link to one file of a message that opens without a token. */
  shareFile: (messageId, index, ttlSecs) =>
    request('POST', `/api/chat/messages/${encodeURIComponent(messageId)}/files/${encodeURIComponent(index)}/share`,
      { ttl_secs: ttlSecs }),
  cancelScheduled: (id) => request('DELETE', `/api/chat/scheduled/${encodeURIComponent(id)}`),
};
