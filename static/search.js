// Message search (SPEC section 10): the sidebar's "Search messages" box,
// its results (room, sender, the text around the match) in place of the
// room list, "Load more" through `next_before_id`, and opening a result.

import { api } from './api.js';
import { $, el, formatStamp } from './dom.js';
import { isOwn, roomTitle, state } from './state.js';

const SEARCH_DELAY_MS = 300;
const PAGE = 20;
/** `q` is 1..200 characters. */
const MAX_QUERY = 200;
const FALLBACK_CHARS = 200;
/**
 * A short query (1–2 characters) scans a window of history per request and
 * may answer an empty page with `next_before_id` set: so many go on by
 * themselves before "Load more" is left to the reader.
 */
const EMPTY_PAGES_FOLLOWED = 5;

let hooks = {
  /** Open a room and scroll to one of its messages. */
  openMessage: () => {},
};

/** What is shown: the query, its results so far, and where the next page starts. */
const search = { text: '', roomId: null, results: [], next: null, loading: false, error: '', note: '', serial: 0, timer: null };

export function initSearch(value) {
  hooks = { ...hooks, ...value };
  const input = $('message-search-input');
  $('message-search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    run();
  });
  input.addEventListener('input', () => {
    clearTimeout(search.timer);
    if (!input.value.trim()) {
      clearSearch();
      return;
    }
    search.timer = setTimeout(run, SEARCH_DELAY_MS);
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && input.value) {
      event.preventDefault();
      event.stopPropagation();
      input.value = '';
      clearSearch();
    }
  });
  $('message-search-scope').addEventListener('change', () => {
    if (input.value.trim()) run();
  });
  $('message-search-more').addEventListener('click', () => more());
}

export function isSearching() {
  return !$('message-search-panel').hidden;
}

/** Forget the search (signed out, or the box emptied). */
export function clearSearch() {
  clearTimeout(search.timer);
  search.serial += 1;
  Object.assign(search, { text: '', roomId: null, results: [], next: null, loading: false, error: '', note: '' });
  render();
}

/** The scope box names the open conversation; without one it goes. */
export function renderSearchScope() {
  const room = state.rooms.get(state.currentRoomId);
  $('message-search-scope-label').hidden = !room;
  if (!room) $('message-search-scope').checked = false;
  $('message-search-scope-name').textContent = room ? roomTitle(room) : '';
}

async function run() {
  clearTimeout(search.timer);
  const text = $('message-search-input').value.trim();
  if (!text) {
    clearSearch();
    return;
  }
  if (Array.from(text).length > MAX_QUERY) {
    search.serial += 1;
    Object.assign(search, { text, results: [], next: null, loading: false, error: `Search for at most ${MAX_QUERY} characters.` });
    render();
    return;
  }
  const scoped = $('message-search-scope').checked && state.currentRoomId !== null;
  Object.assign(search, { text, roomId: scoped ? state.currentRoomId : null, results: [], next: null, error: '' });
  await fetchPage();
}

async function more() {
  if (search.next === null || search.loading) return;
  await fetchPage(search.next);
}

async function fetchPage(beforeId, attempt = 0, emptyPages = 0) {
  const mine = ++search.serial;
  search.loading = true;
  search.error = '';
  search.note = attempt > 0 ? 'Searching too fast; trying again…' : '';
  render();
  try {
    const answer = await api.searchMessages(search.text, { roomId: search.roomId ?? undefined, beforeId, limit: PAGE });
    if (mine !== search.serial) return;
    const seen = new Set(search.results.map((r) => r.message.id));
    const found = ((answer && answer.results) || []).filter((r) => r && r.message && !seen.has(r.message.id));
    search.results.push(...found);
    search.next = answer && typeof answer.next_before_id === 'number' ? answer.next_before_id : null;
    if (found.length === 0 && search.next !== null && emptyPages < EMPTY_PAGES_FOLLOWED) {
      await fetchPage(search.next, 0, emptyPages + 1);
      return;
    }
  } catch (error) {
    if (mine !== search.serial) return;
    if (error.status === 429 && attempt < 3) {
      await new Promise((resolve) => setTimeout(resolve, 1500 * (attempt + 1)));
      if (mine === search.serial) await fetchPage(beforeId, attempt + 1, emptyPages);
      return;
    }
    search.error = error.message;
  }
  search.loading = false;
  search.note = '';
  render();
}

function render() {
  const active = Boolean(search.text);
  $('message-search-panel').hidden = !active;
  // The results take the room list's place while a search is on.
  $('room-list').hidden = active;
  if (active) $('rooms-empty').hidden = true;
  const list = $('message-search-results');
  list.replaceChildren(...search.results.map((result) => resultItem(result)));
  const status = $('message-search-status');
  let line = '';
  if (search.error) line = search.error;
  else if (search.loading) line = search.note || 'Searching…';
  else if (active && search.results.length === 0) line = search.next === null ? 'No messages found.' : 'Nothing found in the newest messages.';
  status.textContent = line;
  status.hidden = !line;
  status.classList.toggle('error', Boolean(search.error));
  $('message-search-more').hidden = search.next === null || search.loading;
}

function resultItem(result) {
  const message = result.message;
  const room = state.rooms.get(message.room_id);
  const sender = isOwn(message) ? 'You' : (message.sender_details && message.sender_details.name) || 'Someone';
  return el('li', {
    class: 'message-result',
    testid: 'message-result',
    dataset: { messageId: String(message.id), roomId: String(message.room_id) },
  },
  el('button', { type: 'button', class: 'message-result-button', onclick: () => hooks.openMessage(message.room_id, message.id) },
    el('span', { class: 'result-top' },
      el('span', { class: 'result-room', testid: 'result-room', text: room ? roomTitle(room) : 'Conversation' }),
      el('span', { class: 'result-time', text: formatStamp(message.created_at) })),
    el('span', { class: 'result-sender', testid: 'result-sender', text: sender }),
    el('span', { class: 'result-text', testid: 'result-text' }, ...highlightNodes(result.highlight, message.content))));
}

// ------------------------------------------------------------- highlight

const NAMED = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decodeEntities(text) {
  return text.replace(/&(#x[0-9a-fA-F]{1,6}|#[0-9]{1,7}|amp|lt|gt|quot|apos);/g, (whole, name) => {
    if (name[0] !== '#') return NAMED[name];
    const code = name[1] === 'x' ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
    return code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff) ? String.fromCodePoint(code) : whole;
  });
}

/**
 * The server's `highlight`: HTML-escaped text with the match in
 * `<mark>`…`</mark>`. Answers its pieces as [{text, mark}], or null when it
 * holds anything else (any other tag, marks nested or unclosed): it is
 * never parsed as HTML, only split here.
 */
export function parseHighlight(html) {
  if (typeof html !== 'string') return null;
  const pieces = [];
  let marked = false;
  for (const part of html.split(/(<\/?mark>)/)) {
    if (part === '<mark>' || part === '</mark>') {
      if (marked === (part === '<mark>')) return null;
      marked = !marked;
      continue;
    }
    if (/[<>]/.test(part)) return null;
    if (part) pieces.push({ text: decodeEntities(part), mark: marked });
  }
  return marked ? null : pieces;
}

/** Text nodes and <mark> elements for a highlight; the message text when it cannot be read. */
export function highlightNodes(html, fallback) {
  const pieces = parseHighlight(html);
  if (pieces === null) return [Array.from(fallback || '').slice(0, FALLBACK_CHARS).join('')];
  return pieces.map((p) => (p.mark ? el('mark', { text: p.text }) : document.createTextNode(p.text)));
}
