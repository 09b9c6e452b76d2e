// Group rooms (SPEC section 8): the "New group" dialog, a group's member
// list with roles and read marks, and the panel where members are added,
// removed, promoted and demoted, the group renamed or left.

import { api } from './api.js';
import { $, el, fillAvatar } from './dom.js';
import { isGroup, newMembers, state } from './state.js';

const MIN_SEARCH_CHARS = 3;
const SEARCH_DELAY_MS = 300;
const MEMBERS_PAGE = 100;
const MEMBERS_MAX_PAGES = 30;
const NAME_MAX = 100;

let hooks = {
  /** Put a Room (from an answer or an event) into the state and show it. */
  upsertRoom: () => {},
  /** The room is gone for this user (left, removed): drop it from everything. */
  dropRoom: () => {},
  openRoom: () => {},
  /** Redraw what depends on a room's members (header, read counts). */
  membersChanged: () => {},
};

export function initGroups(value) {
  hooks = { ...hooks, ...value };
  wireDialog();
  wirePanel();
}

// ------------------------------------------------------------ user search

/**
 * A debounced search over GET /search-users: nothing is asked below three
 * characters (the server answers 422), one request per pause in typing, late
 * answers of older queries are dropped, and a 429 is retried once it passes.
 * `show` gets {state: 'idle'|'short'|'loading'|'done'|'error', users, error}.
 */
export function userSearch(show, { delay = SEARCH_DELAY_MS } = {}) {
  let timer = null;
  let serial = 0;
  const run = async (text, attempt = 0) => {
    const mine = ++serial;
    show({ state: 'loading', users: [] });
    try {
      const answer = await api.searchUsers(text, 20);
      if (mine === serial) show({ state: 'done', users: answer.users || [] });
    } catch (error) {
      if (mine !== serial) return;
      if (error.status === 429 && attempt < 3) {
        show({ state: 'loading', users: [], error: 'Searching too fast; trying again…' });
        timer = setTimeout(() => run(text, attempt + 1), 1500 * (attempt + 1));
        return;
      }
      show({ state: 'error', users: [], error: error.message });
    }
  };
  return {
    input(value) {
      clearTimeout(timer);
      const text = value.trim();
      if (!text) {
        serial += 1;
        show({ state: 'idle', users: [] });
        return;
      }
      if (Array.from(text).length < MIN_SEARCH_CHARS) {
        serial += 1;
        show({ state: 'short', users: [] });
        return;
      }
      timer = setTimeout(() => run(text), delay);
    },
    /** Search at once (Enter). */
    now(value) {
      clearTimeout(timer);
      const text = value.trim();
      if (Array.from(text).length >= MIN_SEARCH_CHARS) run(text);
      else this.input(value);
    },
    cancel() {
      clearTimeout(timer);
      serial += 1;
    },
  };
}

function searchNote(result) {
  if (result.state === 'short') return el('li', { class: 'pick-note', text: `Type at least ${MIN_SEARCH_CHARS} characters.` });
  if (result.state === 'loading') return el('li', { class: 'pick-note', text: result.error || 'Searching…' });
  if (result.state === 'error') return el('li', { class: 'pick-note error', text: result.error });
  if (result.users.length === 0) return el('li', { class: 'pick-note', testid: 'pick-empty', text: 'No users found' });
  return null;
}

function personItem(user, { testid, chosen = false, action, actionTestid, onAction, disabled = false }) {
  const avatar = el('span', { class: 'avatar small' });
  fillAvatar(avatar, user);
  return el(
    'li',
    { class: `pick-item${chosen ? ' chosen' : ''}`, testid, dataset: { userId: String(user.id), email: user.email || '' } },
    avatar,
    el('span', { class: 'pick-body' },
      el('span', { class: 'pick-name', text: user.name }),
      el('span', { class: 'pick-email', text: user.email || '' })),
    el('button', {
      type: 'button',
      class: chosen ? 'ghost small' : 'primary small',
      testid: actionTestid,
      'aria-pressed': chosen ? 'true' : 'false',
      disabled,
      text: action,
      onclick: onAction,
    }),
  );
}

// ------------------------------------------------------ new group dialog

const draft = { chosen: new Map(), result: { state: 'idle', users: [] }, busy: false };
const dialogSearch = userSearch((result) => {
  draft.result = result;
  renderCandidates();
});

export function openNewGroupDialog() {
  const dialog = $('new-group-dialog');
  draft.chosen = new Map();
  draft.result = { state: 'idle', users: [] };
  draft.busy = false;
  $('new-group-form').reset();
  setDialogError('');
  renderCandidates();
  renderChosen();
  if (typeof dialog.showModal === 'function') dialog.showModal();
  else dialog.setAttribute('open', '');
  $('group-name-input').focus();
}

function closeNewGroupDialog() {
  dialogSearch.cancel();
  const dialog = $('new-group-dialog');
  if (dialog.open) dialog.close();
}

function setDialogError(text) {
  const node = $('group-error');
  node.textContent = text;
  node.hidden = !text;
}

function toggleChosen(user) {
  if (draft.chosen.has(user.id)) draft.chosen.delete(user.id);
  else draft.chosen.set(user.id, user);
  renderCandidates();
  renderChosen();
}

function renderCandidates() {
  const list = $('group-candidates');
  const result = draft.result;
  $('group-search-note').hidden = result.state !== 'idle';
  if (result.state === 'idle') {
    list.hidden = true;
    list.replaceChildren();
    return;
  }
  list.hidden = false;
  const note = searchNote(result);
  if (note) {
    list.replaceChildren(note);
    return;
  }
  list.replaceChildren(...result.users.map((user) => {
    const chosen = draft.chosen.has(user.id);
    return personItem(user, {
      testid: 'group-candidate',
      chosen,
      action: chosen ? 'Added' : 'Add',
      actionTestid: 'group-candidate-toggle',
      onAction: () => toggleChosen(user),
    });
  }));
}

function renderChosen() {
  const list = $('group-chosen');
  list.hidden = draft.chosen.size === 0;
  list.replaceChildren(...Array.from(draft.chosen.values()).map((user) => el(
    'li',
    { class: 'chip', testid: 'group-chosen-member', dataset: { userId: String(user.id), email: user.email || '' }, title: user.email },
    el('span', { class: 'chip-name', text: user.name }),
    el('button', {
      type: 'button', class: 'chip-remove', 'aria-label': `Remove ${user.name}`, text: '×',
      onclick: () => toggleChosen(user),
    }),
  )));
}

async function submitNewGroup(event) {
  event.preventDefault();
  if (draft.busy) return;
  const name = $('group-name-input').value.trim();
  if (!name) {
    setDialogError('Please give the group a name.');
    $('group-name-input').focus();
    return;
  }
  if (Array.from(name).length > NAME_MAX) {
    setDialogError(`A group name can have at most ${NAME_MAX} characters.`);
    return;
  }
  setDialogError('');
  draft.busy = true;
  $('group-create').disabled = true;
  try {
    const room = await api.createGroup(name, Array.from(draft.chosen.keys()));
    hooks.upsertRoom(room);
    closeNewGroupDialog();
    hooks.openRoom(room.id);
  } catch (error) {
    setDialogError(error.message);
  } finally {
    draft.busy = false;
    $('group-create').disabled = false;
  }
}

function wireDialog() {
  $('new-group-button').addEventListener('click', () => openNewGroupDialog());
  $('group-cancel').addEventListener('click', () => closeNewGroupDialog());
  $('new-group-form').addEventListener('submit', submitNewGroup);
  const search = $('group-member-search');
  search.addEventListener('input', () => dialogSearch.input(search.value));
  search.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') {
      // Enter searches now; it does not create the group.
      event.preventDefault();
      dialogSearch.now(search.value);
    }
  });
  $('new-group-dialog').addEventListener('close', () => dialogSearch.cancel());
}

// ------------------------------------------------------------- members

function membersOf(roomId) {
  let members = state.members.get(roomId);
  if (!members) {
    members = newMembers();
    members.reads = new Map();
    members.gone = new Set();
    state.members.set(roomId, members);
  }
  return members;
}

/** The newest message id this client knows of in a room. */
function newestKnownId(roomId) {
  let max = 0;
  const room = state.rooms.get(roomId);
  if (room && room.last_message) max = room.last_message.id;
  const conv = state.convs.get(roomId);
  if (conv) for (const id of conv.messages.keys()) if (id > max) max = id;
  return max;
}

/**
 * Load every member of a group (keyset pages of 100). Answers the Members;
 * a load already under way is shared. Events that arrive meanwhile are kept
 * (reads by their high-water mark, removals by a tombstone) and win over
 * the pages, which may be older.
 */
export function loadMembers(roomId, { force = false } = {}) {
  const members = membersOf(roomId);
  if (members.loading) {
    if (force) members.again = true;
    return members.loading;
  }
  if (members.complete && !force) return Promise.resolve(members);
  const session = state.me;
  members.error = null;
  members.loading = (async () => {
    do {
      members.again = false;
      const fresh = new Map();
      let after;
      let total = 0;
      let complete = false;
      for (let page = 0; page < MEMBERS_MAX_PAGES; page += 1) {
        const answer = await api.members(roomId, after, MEMBERS_PAGE);
        if (state.me !== session || state.members.get(roomId) !== members) return members;
        const list = answer.members || [];
        total = Number(answer.total) || 0;
        for (const member of list) fresh.set(member.id, member);
        if (list.length < MEMBERS_PAGE || fresh.size >= total) {
          complete = true;
          break;
        }
        after = list[list.length - 1].id;
      }
      for (const id of members.gone) fresh.delete(id);
      for (const [id, member] of members.byId) {
        // Added by an event after the page that would list it.
        if (!fresh.has(id) && member.fromEvent) fresh.set(id, member);
      }
      for (const [id, member] of fresh) {
        const seen = members.reads.get(id) || 0;
        if (seen > (Number(member.last_read_id) || 0)) fresh.set(id, { ...member, last_read_id: seen });
      }
      members.byId = fresh;
      members.total = complete ? fresh.size : Math.max(total, fresh.size);
      members.complete = complete;
    } while (members.again);
    return members;
  })();
  members.loading
    .catch((error) => {
      members.error = error.message;
    })
    .finally(() => {
      members.loading = null;
      if (state.members.get(roomId) === members) {
        hooks.membersChanged(roomId);
        if (panel.roomId === roomId) renderPanel();
      }
    });
  return members.loading;
}

/** `member_added` (or our own add): the users become members, reading from now on. */
export function applyMemberAdded(roomId, users) {
  const members = state.members.get(roomId);
  if (!members) return;
  const mark = newestKnownId(roomId);
  for (const user of users || []) {
    members.gone.delete(user.id);
    if (members.byId.has(user.id)) continue;
    members.byId.set(user.id, { ...user, role: 'member', last_read_id: mark, fromEvent: true });
    members.total += 1;
  }
  if (members.loading) members.again = true;
}

/** `member_removed` (or our own removal). */
export function applyMemberRemoved(roomId, userId) {
  const members = state.members.get(roomId);
  if (!members) return;
  members.gone.add(userId);
  if (members.byId.delete(userId)) members.total = Math.max(0, members.total - 1);
}

/** `message_read`: the reader's mark only moves forward, so repeats and replays change nothing. */
export function applyRead(roomId, userId, lastReadId) {
  const members = state.members.get(roomId);
  if (!members || typeof lastReadId !== 'number') return false;
  members.reads.set(userId, Math.max(members.reads.get(userId) || 0, lastReadId));
  const member = members.byId.get(userId);
  if (member && (Number(member.last_read_id) || 0) < lastReadId) {
    members.byId.set(userId, { ...member, last_read_id: lastReadId });
    return true;
  }
  return false;
}

export function applyRole(roomId, member) {
  const members = state.members.get(roomId);
  if (!members || !member || typeof member.id !== 'number') return;
  const current = members.byId.get(member.id);
  if (current) members.byId.set(member.id, { ...current, ...member, last_read_id: Math.max(Number(current.last_read_id) || 0, Number(member.last_read_id) || 0) });
}

/** Forget a room's members (it is gone, or everything is reloaded). */
export function forgetMembers(roomId) {
  state.members.delete(roomId);
  if (panel.roomId === roomId) closePanel();
}

// --------------------------------------------------------------- panel

const panel = {
  roomId: null,
  renaming: false,
  confirmLeave: false,
  busy: false,
  error: '',
  addResult: { state: 'idle', users: [] },
};
const addSearch = userSearch((result) => {
  panel.addResult = result;
  renderAddResults();
});

export function panelRoomId() {
  return panel.roomId;
}

export function openPanel(roomId) {
  const room = state.rooms.get(roomId);
  if (!isGroup(room)) return;
  panel.roomId = roomId;
  panel.renaming = false;
  panel.confirmLeave = false;
  panel.error = '';
  panel.addResult = { state: 'idle', users: [] };
  $('add-member-input').value = '';
  $('group-panel').hidden = false;
  $('group-info-button').setAttribute('aria-expanded', 'true');
  $('conv-main').classList.add('panel-open');
  renderPanel();
  loadMembers(roomId);
}

export function closePanel() {
  if (panel.roomId === null) return;
  panel.roomId = null;
  addSearch.cancel();
  $('group-panel').hidden = true;
  $('group-info-button').setAttribute('aria-expanded', 'false');
  $('conv-main').classList.remove('panel-open');
}

function isAdmin(room) {
  return Boolean(room) && room.role === 'admin';
}

function setPanelError(text) {
  panel.error = text;
  const node = $('panel-error');
  node.textContent = text;
  node.hidden = !text;
}

/** Redraw the panel from the state (called on every change of its room). */
export function renderPanel() {
  const roomId = panel.roomId;
  if (roomId === null) return;
  const room = state.rooms.get(roomId);
  if (!isGroup(room)) {
    closePanel();
    return;
  }
  const admin = isAdmin(room);
  const members = state.members.get(roomId);
  $('group-name').textContent = room.name || 'Group';
  $('rename-button').hidden = !admin || panel.renaming;
  $('group-name-row').hidden = panel.renaming;
  $('rename-form').hidden = !panel.renaming;
  const count = members && members.complete ? members.byId.size : Number(room.member_count) || 0;
  $('group-count').textContent = `${count} ${count === 1 ? 'member' : 'members'}${admin ? ' · you are an admin' : ''}`;
  $('add-members').hidden = !admin;
  $('leave-button').hidden = panel.confirmLeave;
  $('leave-confirm').hidden = !panel.confirmLeave;
  setPanelError(panel.error || (members && members.error ? `Could not load the members: ${members.error}` : ''));

  const list = $('member-list');
  if (!members || (members.byId.size === 0 && members.loading)) {
    list.replaceChildren(el('li', { class: 'pick-note', text: 'Loading members…' }));
  } else {
    const sorted = Array.from(members.byId.values()).sort((a, b) => {
      const ra = a.role === 'admin' ? 0 : 1;
      const rb = b.role === 'admin' ? 0 : 1;
      return ra - rb || String(a.name).localeCompare(String(b.name)) || a.id - b.id;
    });
    list.replaceChildren(...sorted.map((member) => memberItem(room, member, admin)));
  }
  $('members-more').hidden = !members || members.complete || Boolean(members.loading);
  renderAddResults();
}

function memberItem(room, member, admin) {
  const me = state.me && member.id === state.me.id;
  const role = member.role === 'admin' ? 'admin' : 'member';
  const avatar = el('span', { class: 'avatar small' });
  fillAvatar(avatar, member);
  // One's own presence is this client's link (the server leaves the caller out).
  const online = me ? state.connection === 'open' : Boolean(member.is_online);
  const tools = el('span', { class: 'member-tools' });
  if (admin && !me) {
    tools.append(role === 'admin'
      ? el('button', {
        type: 'button', class: 'ghost small', testid: 'demote-button', text: 'Remove admin', disabled: panel.busy,
        onclick: () => changeRole(room.id, member, 'member'),
      })
      : el('button', {
        type: 'button', class: 'ghost small', testid: 'promote-button', text: 'Make admin', disabled: panel.busy,
        onclick: () => changeRole(room.id, member, 'admin'),
      }));
    tools.append(el('button', {
      type: 'button', class: 'ghost small remove', testid: 'remove-member-button', text: 'Remove',
      'aria-label': `Remove ${member.name}`, disabled: panel.busy,
      onclick: () => removeMember(room.id, member),
    }));
  }
  return el(
    'li',
    { class: 'member-item', testid: 'member', dataset: { userId: String(member.id), email: member.email || '', role } },
    el('span', { class: 'avatar-wrap' }, avatar,
      el('span', { class: `presence-dot${online ? ' online' : ''}`, title: online ? 'Online' : 'Offline' })),
    el('span', { class: 'member-body' },
      el('span', { class: 'member-name', testid: 'member-name', text: me ? `${member.name} (you)` : member.name }),
      el('span', { class: 'member-email', text: member.email || '' })),
    el('span', { class: `role-badge ${role}`, testid: 'member-role', text: role === 'admin' ? 'Admin' : 'Member' }),
    tools,
  );
}

function renderAddResults() {
  const list = $('add-member-results');
  const result = panel.addResult;
  if (result.state === 'idle') {
    list.hidden = true;
    list.replaceChildren();
    return;
  }
  list.hidden = false;
  const note = searchNote(result);
  if (note) {
    list.replaceChildren(note);
    return;
  }
  const members = state.members.get(panel.roomId);
  list.replaceChildren(...result.users.map((user) => {
    const already = Boolean(members && members.byId.has(user.id));
    return personItem(user, {
      testid: 'add-candidate',
      chosen: already,
      action: already ? 'Member' : 'Add',
      actionTestid: 'add-member-button',
      disabled: already || panel.busy,
      onAction: () => addMember(panel.roomId, user),
    });
  }));
}

/** Run one admin action: buttons are disabled meanwhile, a refusal shows in the panel. */
async function act(work) {
  if (panel.busy) return;
  panel.busy = true;
  setPanelError('');
  panel.error = '';
  renderPanel();
  try {
    await work();
  } catch (error) {
    panel.error = error.message;
  } finally {
    panel.busy = false;
    renderPanel();
  }
}

function addMember(roomId, user) {
  return act(async () => {
    const answer = await api.addMembers(roomId, [user.id]);
    const added = answer && Array.isArray(answer.added) ? answer.added : [];
    applyMemberAdded(roomId, added);
    const room = state.rooms.get(roomId);
    if (room && added.length > 0 && !(state.members.get(roomId) || {}).complete) {
      room.member_count = (Number(room.member_count) || 0) + added.length;
    }
    syncMemberCount(roomId);
    $('add-member-input').value = '';
    addSearch.cancel();
    panel.addResult = { state: 'idle', users: [] };
    hooks.membersChanged(roomId);
  });
}

function removeMember(roomId, member) {
  return act(async () => {
    await api.removeMember(roomId, member.id);
    applyMemberRemoved(roomId, member.id);
    syncMemberCount(roomId);
    hooks.membersChanged(roomId);
  });
}

function changeRole(roomId, member, role) {
  return act(async () => {
    const answer = await api.setRole(roomId, member.id, role);
    applyRole(roomId, answer && typeof answer.id === 'number' ? answer : { ...member, role });
    hooks.membersChanged(roomId);
  });
}

/** Rooms this client is leaving: their room_removed (which may beat the answer) says "You left". */
const leaving = new Set();

export function leftNotice(roomId) {
  if (!leaving.has(roomId)) return null;
  const room = state.rooms.get(roomId);
  return `You left ${room && room.name ? `“${room.name}”` : 'the group'}.`;
}

function leaveGroup(roomId) {
  return act(async () => {
    leaving.add(roomId);
    try {
      await api.removeMember(roomId, state.me.id);
      hooks.dropRoom(roomId, leftNotice(roomId));
    } finally {
      leaving.delete(roomId);
    }
  });
}

function rename(roomId, name) {
  const trimmed = name.trim();
  if (!trimmed) {
    panel.error = 'A group name cannot be empty.';
    renderPanel();
    return Promise.resolve();
  }
  if (Array.from(trimmed).length > NAME_MAX) {
    panel.error = `A group name can have at most ${NAME_MAX} characters.`;
    renderPanel();
    return Promise.resolve();
  }
  return act(async () => {
    const room = await api.renameRoom(roomId, trimmed);
    panel.renaming = false;
    hooks.upsertRoom(room);
  });
}

/** With every member loaded, the Room's member_count follows the list. */
export function syncMemberCount(roomId) {
  const members = state.members.get(roomId);
  const room = state.rooms.get(roomId);
  if (room && members && members.complete) room.member_count = members.byId.size;
}

function wirePanel() {
  $('group-info-button').addEventListener('click', () => {
    if (panel.roomId !== null) closePanel();
    else if (state.currentRoomId !== null) openPanel(state.currentRoomId);
  });
  $('group-panel-close').addEventListener('click', () => closePanel());
  $('rename-button').addEventListener('click', () => {
    const room = state.rooms.get(panel.roomId);
    panel.renaming = true;
    panel.error = '';
    $('rename-input').value = (room && room.name) || '';
    renderPanel();
    $('rename-input').focus();
    $('rename-input').select();
  });
  $('rename-cancel').addEventListener('click', () => {
    panel.renaming = false;
    panel.error = '';
    renderPanel();
  });
  $('rename-form').addEventListener('submit', (event) => {
    event.preventDefault();
    if (panel.roomId !== null) rename(panel.roomId, $('rename-input').value);
  });
  const input = $('add-member-input');
  input.addEventListener('input', () => addSearch.input(input.value));
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') {
      event.preventDefault();
      addSearch.now(input.value);
    }
  });
  $('leave-button').addEventListener('click', () => {
    panel.confirmLeave = true;
    renderPanel();
  });
  $('leave-cancel').addEventListener('click', () => {
    panel.confirmLeave = false;
    renderPanel();
  });
  $('leave-confirm-button').addEventListener('click', () => {
    if (panel.roomId !== null) leaveGroup(panel.roomId);
  });
  $('members-more').addEventListener('click', () => {
    if (panel.roomId !== null) loadMembers(panel.roomId, { force: true });
  });
  $('group-panel').addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && !panel.renaming) {
      event.stopPropagation();
      closePanel();
    }
  });
}
