// Group rooms and the event stream in the web client (SPEC sections 8 and
// 9): four people in four browser contexts create a group, talk, read,
// manage members, and reconnect with the cursor. Steps run in order and
// share the browser; a step after a failed one is skipped.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { artifactsDir, launchBrowser, newWatchedPage, sleep, startServer, waitFor } from './support.mjs';

const tid = (id) => `[data-testid="${id}"]`;
const PASSWORD = 'password123';
const PEOPLE = {
  ann: { name: 'Ann Admin', email: 'ann@example.com' },
  ben: { name: 'Ben Member', email: 'ben@example.com' },
  cat: { name: 'Cat Member', email: 'cat@example.com' },
  dan: { name: 'Dan Later', email: 'dan@example.com' },
};

let server;
let browser;
/** label → {context, page, session, sockets: [ws url], requests: [url]} */
const who = {};
const errors = [];
let failed = false;
let groupId = null;

function step(name, fn) {
  test(name, async (t) => {
    if (failed) {
      t.skip('an earlier step failed');
      return;
    }
    try {
      await fn(t);
    } catch (error) {
      failed = true;
      for (const [label, person] of Object.entries(who)) {
        if (!person.page || person.page.isClosed()) continue;
        try {
          await person.page.screenshot({ path: path.join(artifactsDir, `groups-failure-${label}.png`), timeout: 5000 });
        } catch {
          // The page is gone.
        }
      }
      if (server) error.message += `\n--- chatd output (tail) ---\n${server.logs().slice(-4000)}`;
      throw error;
    }
  });
}

async function rest(method, urlPath, body, token) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(`${server.baseUrl}${urlPath}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** A signed-in page of `label` (the token is put in place before the app starts). */
async function openAs(label, hash = '') {
  const person = who[label];
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  await context.addInitScript((token) => localStorage.setItem('chatd.token', token), person.session.access_token);
  const page = await newWatchedPage(context, label, errors);
  person.context = context;
  person.page = page;
  person.sockets = [];
  person.requests = [];
  page.on('websocket', (ws) => person.sockets.push(ws.url()));
  page.on('request', (request) => person.requests.push(request.url()));
  await page.goto(`${server.baseUrl}/${hash}`);
  await waitFor(`${label} signed in`, () => page.locator(tid('me-name')).textContent(), (t) => t === PEOPLE[label].name);
  await waitFor(`${label} connected`, () => page.locator(tid('conn-status')).getAttribute('data-state'), (s) => s === 'open');
  return page;
}

const page = (label) => who[label].page;
const roomItem = (label, roomId) => page(label).locator(`${tid('room-item')}[data-room-id="${roomId}"]`);
const connected = (label) => waitFor(`${label} connected`,
  () => page(label).locator(tid('conn-status')).getAttribute('data-state'), (s) => s === 'open', 15_000);

function messages(p) {
  return p.$$eval('[data-testid="message"]', (nodes) =>
    nodes.map((node) => ({
      id: node.dataset.id ? Number(node.dataset.id) : null,
      pending: node.dataset.pending === 'true',
      own: node.dataset.own === 'true',
      sender: node.querySelector('[data-testid="message-sender"]')?.textContent ?? null,
      text: node.querySelector('[data-testid="message-content"]')?.textContent ?? null,
      edited: Boolean(node.querySelector('[data-testid="message-edited"]')),
      status: node.querySelector('[data-testid="message-status"]')?.textContent ?? null,
      readCount: node.querySelector('[data-testid="message-status"]')?.dataset.readCount ?? null,
      allRead: node.querySelector('[data-testid="message-status"]')?.dataset.status === 'read',
    })));
}

async function waitForMessage(p, what, predicate, timeout) {
  return waitFor(what, async () => (await messages(p)).filter(predicate), (found) => found.length > 0, timeout);
}

async function send(p, content) {
  const input = p.locator(tid('composer-input'));
  await input.fill(content);
  await input.press('Enter');
  await waitForMessage(p, `"${content}" confirmed`, (m) => m.text === content && !m.pending);
}

async function openRoom(label, roomId) {
  await roomItem(label, roomId).locator('button').click();
  await waitFor(`${label} in room ${roomId}`, () => page(label).url(), (u) => u.endsWith(`#room=${roomId}`));
  await page(label).locator(tid('composer-input')).waitFor();
}

async function openPanel(label) {
  const p = page(label);
  if (!(await p.locator(tid('group-panel')).isVisible())) await p.locator(tid('group-info-button')).click();
  await p.locator(tid('group-panel')).waitFor();
}

function panelMembers(p) {
  return p.$$eval('[data-testid="member"]', (nodes) => nodes.map((n) => ({
    email: n.dataset.email,
    role: n.dataset.role,
    badge: n.querySelector('[data-testid="member-role"]')?.textContent,
    promote: Boolean(n.querySelector('[data-testid="promote-button"]')),
    demote: Boolean(n.querySelector('[data-testid="demote-button"]')),
    remove: Boolean(n.querySelector('[data-testid="remove-member-button"]')),
  })));
}

const memberSummary = async (p) => (await panelMembers(p)).map((m) => `${m.email}:${m.role}`).sort().join(',');
const roomNames = (p) => p.$$eval('[data-testid="room-item"]', (nodes) => nodes.map((n) => ({
  id: Number(n.dataset.roomId),
  type: n.dataset.roomType,
  name: n.querySelector('[data-testid="room-name"]')?.textContent,
})));

describe('groups in the web client', { timeout: 180_000 }, () => {
  before(async () => {
    fs.mkdirSync(artifactsDir, { recursive: true });
    server = await startServer();
    browser = await launchBrowser();
    for (const [label, person] of Object.entries(PEOPLE)) {
      const answer = await rest('POST', '/api/auth/register', { ...person, password: PASSWORD });
      assert.equal(answer.status, 201, `register ${label}`);
      who[label] = { session: answer.body };
    }
    for (const label of ['ann', 'ben', 'cat', 'dan']) await openAs(label);
  });

  after(async () => {
    try {
      if (browser) await browser.close();
    } finally {
      if (server) await server.stop();
    }
  });

  step('Ann creates a group of three: members picked through search, the room appears everywhere at once', async () => {
    const p = page('ann');
    await p.locator(tid('new-group-button')).click();
    await p.locator(tid('new-group-dialog')).waitFor();
    // A name is needed: nothing is sent without one.
    await p.locator(tid('group-create')).click();
    await waitFor('the missing name reported', () => p.locator(tid('group-error')).textContent(), (t) => /name/.test(t));
    await p.locator(tid('group-name-input')).fill('  Trip planning  ');
    const search = p.locator(tid('group-member-search'));
    await search.fill('be');
    await waitFor('the hint for short queries', () => p.locator(tid('group-candidates')).textContent(), (t) => /at least 3/.test(t));
    for (const label of ['ben', 'cat']) {
      await search.fill(`${label}@exa`);
      const candidate = p.locator(`${tid('group-candidate')}[data-email="${PEOPLE[label].email}"]`);
      await candidate.waitFor();
      await candidate.locator(tid('group-candidate-toggle')).click();
    }
    await waitFor('two chosen', () => p.locator(tid('group-chosen-member')).count(), (n) => n === 2);
    await p.locator(tid('group-create')).click();
    await waitFor('the group open at Ann', () => p.locator(tid('conv-name')).textContent(), (t) => t === 'Trip planning');
    assert.equal(await p.locator(tid('new-group-dialog')).isVisible(), false, 'the dialog closed');
    await waitFor('three members in the header', () => p.locator(tid('conv-status')).textContent(), (t) => t === '3 members');
    groupId = Number(/#room=(\d+)$/.exec(p.url())[1]);
    assert.ok(groupId > 0);
    assert.equal(await roomItem('ann', groupId).getAttribute('data-room-type'), 'group');

    // room_created: Ben and Cat see it before anyone writes; Dan does not.
    for (const label of ['ben', 'cat']) {
      await roomItem(label, groupId).waitFor();
      assert.equal(await roomItem(label, groupId).locator(tid('room-name')).textContent(), 'Trip planning');
    }
    await sleep(200);
    assert.equal(await roomItem('dan', groupId).count(), 0);
  });

  step('messages go to everyone, with the sender\'s name; read counts grow as members read', async () => {
    await send(page('ann'), 'Hello all');
    let [mine] = await messages(page('ann'));
    assert.equal(mine.sender, null, 'one\'s own messages carry no name');
    assert.equal(mine.status, 'Sent');
    assert.equal(mine.readCount, '0');

    // Ben's list shows the message as unread, with Ann's first name.
    await waitFor('unread at Ben', () => roomItem('ben', groupId).locator(tid('room-unread')).textContent(), (t) => t === '1');
    assert.equal(await roomItem('ben', groupId).locator(tid('room-preview')).textContent(), 'Ann: Hello all');

    await openRoom('ben', groupId);
    const [atBen] = await waitForMessage(page('ben'), 'Hello all at Ben', (m) => m.text === 'Hello all');
    assert.equal(atBen.sender, PEOPLE.ann.name);
    await waitForMessage(page('ann'), 'Read by 1', (m) => m.text === 'Hello all' && m.status === 'Read by 1' && !m.allRead);

    await openRoom('cat', groupId);
    await waitForMessage(page('cat'), 'Hello all at Cat', (m) => m.text === 'Hello all' && m.sender === PEOPLE.ann.name);
    await waitForMessage(page('ann'), 'Read by 2, read by all', (m) => m.text === 'Hello all' && m.status === 'Read by 2' && m.allRead);

    // Ben answers; Ann and Cat see his name; two messages of Ben in a row show it once.
    await send(page('ben'), 'Hi from Ben');
    await send(page('ben'), 'and again');
    for (const label of ['ann', 'cat']) {
      const list = await waitFor(`Ben's messages at ${label}`, () => messages(page(label)),
        (l) => l.some((m) => m.text === 'and again'));
      assert.equal(list.find((m) => m.text === 'Hi from Ben').sender, PEOPLE.ben.name);
      assert.equal(list.find((m) => m.text === 'and again').sender, null, 'the name heads a run once');
    }
    await waitForMessage(page('ben'), 'Ben\'s read by both', (m) => m.text === 'and again' && m.status === 'Read by 2');
    // A reload computes the same counts from the server's state.
    await page('ann').reload();
    await waitForMessage(page('ann'), 'read counts after a reload', (m) => m.text === 'Hello all' && m.status === 'Read by 2');
  });

  step('the member list shows roles; only admins get the admin controls', async () => {
    await openPanel('ann');
    const ann = page('ann');
    await waitFor('three members at Ann', () => memberSummary(ann),
      (s) => s === 'ann@example.com:admin,ben@example.com:member,cat@example.com:member');
    const members = await panelMembers(ann);
    assert.equal(members.find((m) => m.email === PEOPLE.ann.email).badge, 'Admin');
    assert.equal(members.find((m) => m.email === PEOPLE.ben.email).badge, 'Member');
    assert.ok(members.find((m) => m.email === PEOPLE.ben.email).promote, 'Ann can promote Ben');
    assert.ok(members.find((m) => m.email === PEOPLE.ben.email).remove, 'Ann can remove Ben');
    assert.ok(!members.find((m) => m.email === PEOPLE.ann.email).remove, 'no remove button for oneself');
    assert.equal(await ann.locator(tid('rename-button')).isVisible(), true);
    assert.equal(await ann.locator(tid('add-members')).isVisible(), true);

    await openPanel('ben');
    const ben = page('ben');
    await waitFor('three members at Ben', () => memberSummary(ben),
      (s) => s === 'ann@example.com:admin,ben@example.com:member,cat@example.com:member');
    const seen = await panelMembers(ben);
    assert.ok(seen.every((m) => !m.promote && !m.demote && !m.remove), 'a member has no admin controls');
    assert.equal(await ben.locator(tid('rename-button')).isVisible(), false);
    assert.equal(await ben.locator(tid('add-members')).isVisible(), false);
    assert.equal(await ben.locator(tid('leave-button')).isVisible(), true);
    await ann.screenshot({ path: path.join(artifactsDir, 'group-panel.png') });
  });

  step('promote and demote: the roles change live, and the controls follow', async () => {
    const ann = page('ann');
    const ben = page('ben');
    await ann.locator(`${tid('member')}[data-email="${PEOPLE.ben.email}"] ${tid('promote-button')}`).click();
    await waitFor('Ben admin at Ann', () => memberSummary(ann), (s) => s.includes('ben@example.com:admin'));
    await waitFor('Ben admin at Ben', () => memberSummary(ben), (s) => s.includes('ben@example.com:admin'));
    await waitFor('Ben gets the admin controls', () => ben.locator(tid('rename-button')).isVisible(), (v) => v === true);

    await ann.locator(`${tid('member')}[data-email="${PEOPLE.ben.email}"] ${tid('demote-button')}`).click();
    await waitFor('Ben member again at Ann', () => memberSummary(ann), (s) => s.includes('ben@example.com:member'));
    await waitFor('Ben loses the admin controls', () => ben.locator(tid('rename-button')).isVisible(), (v) => v === false);
  });

  step('adding a member: the room appears at once for Dan, with the history', async () => {
    const ann = page('ann');
    await ann.locator(tid('add-member-input')).fill('dan@ex');
    const candidate = ann.locator(`${tid('add-candidate')}[data-email="${PEOPLE.dan.email}"]`);
    await candidate.waitFor();
    await candidate.locator(tid('add-member-button')).click();
    await waitFor('four members at Ann', () => memberSummary(ann), (s) => s.includes('dan@example.com:member'));
    for (const label of ['ann', 'ben', 'cat']) {
      await waitFor(`4 members in ${label}'s header`, () => page(label).locator(tid('conv-status')).textContent(), (t) => t === '4 members');
    }
    await roomItem('dan', groupId).waitFor();
    assert.equal(await roomItem('dan', groupId).locator(tid('room-name')).textContent(), 'Trip planning');
    await openRoom('dan', groupId);
    await waitForMessage(page('dan'), 'the history before Dan joined', (m) => m.text === 'Hello all' && m.sender === PEOPLE.ann.name);
    // Old history is not unread for a new member.
    assert.equal(await roomItem('dan', groupId).locator(tid('room-unread')).isVisible(), false);
    await send(page('dan'), 'Dan here');
    await waitForMessage(page('cat'), 'Dan\'s message at Cat', (m) => m.text === 'Dan here' && m.sender === PEOPLE.dan.name);
  });

  step('typing in a group names each person; a quick stop is not lost', async () => {
    const indicator = () => page('ann').locator(tid('typing-indicator')).textContent();
    await page('ben').locator(tid('composer-input')).fill('x');
    await page('dan').locator(tid('composer-input')).fill('y');
    await waitFor('two people typing at Ann', indicator, (t) => t === `${PEOPLE.ben.name} and ${PEOPLE.dan.name} are typing…`);
    // Ben stops at once (well within the server's 250 ms between typing frames).
    await page('ben').locator(tid('composer-input')).fill('');
    await waitFor('only Dan typing', indicator, (t) => t === `${PEOPLE.dan.name} is typing…`, 2000);
    await page('dan').locator(tid('composer-input')).fill('');
    await waitFor('nobody typing', indicator, (t) => t === '', 2000);
  });

  step('renaming: every member sees the new name live', async () => {
    const ann = page('ann');
    await ann.locator(tid('rename-button')).click();
    await ann.locator(tid('rename-input')).fill('Trip 2025');
    await ann.locator(tid('rename-save')).click();
    await waitFor('the name in Ann\'s panel', () => ann.locator(tid('group-name')).textContent(), (t) => t === 'Trip 2025');
    for (const label of ['ann', 'ben', 'cat', 'dan']) {
      await waitFor(`the new name at ${label}`, () => roomItem(label, groupId).locator(tid('room-name')).textContent(), (t) => t === 'Trip 2025');
      await waitFor(`the new header at ${label}`, () => page(label).locator(tid('conv-name')).textContent(), (t) => t === 'Trip 2025');
    }
  });

  step('removing a member: the room disappears for Dan, the others see three members', async () => {
    const ann = page('ann');
    await ann.locator(`${tid('member')}[data-email="${PEOPLE.dan.email}"] ${tid('remove-member-button')}`).click();
    await waitFor('Dan gone from Ann\'s list', () => memberSummary(ann), (s) => !s.includes('dan@'));
    await waitFor('the room gone at Dan', () => roomItem('dan', groupId).count(), (n) => n === 0);
    await waitFor('Dan\'s conversation closed', () => page('dan').locator(tid('conv-placeholder')).isVisible(), (v) => v === true);
    assert.match(await page('dan').locator(tid('notice')).textContent(), /no longer a member of “Trip 2025”/);
    for (const label of ['ben', 'cat']) {
      await waitFor(`3 members at ${label}`, () => page(label).locator(tid('conv-status')).textContent(), (t) => t === '3 members');
    }
    // Dan is an outsider again: the room answers 404.
    const answer = await rest('GET', `/api/chat/rooms/${groupId}`, undefined, who.dan.session.access_token);
    assert.equal(answer.status, 404);
  });

  step('leaving: the room goes from Cat\'s list, the others see two members', async () => {
    await openPanel('cat');
    const cat = page('cat');
    await cat.locator(tid('leave-button')).click();
    await cat.locator(tid('leave-confirm-button')).click();
    await waitFor('the room gone at Cat', () => roomItem('cat', groupId).count(), (n) => n === 0);
    assert.equal(await cat.locator(tid('conv-placeholder')).isVisible(), true);
    await waitFor('2 members at Ann', () => memberSummary(page('ann')), (s) => s === 'ann@example.com:admin,ben@example.com:member');
    await waitFor('2 members at Ben', () => page('ben').locator(tid('conv-status')).textContent(), (t) => t === '2 members');
  });

  step('a new direct room appears at once on the other side (room_created)', async () => {
    const ann = page('ann');
    await ann.locator(tid('search-input')).fill('cat@ex');
    const result = ann.locator(`${tid('search-result')}[data-email="${PEOPLE.cat.email}"]`);
    await result.waitFor();
    await result.locator('button').click();
    await waitFor('the direct room at Ann', () => ann.locator(tid('conv-name')).textContent(), (t) => t === PEOPLE.cat.name);
    const direct = Number(/#room=(\d+)$/.exec(ann.url())[1]);
    await roomItem('cat', direct).waitFor();
    assert.equal(await roomItem('cat', direct).locator(tid('room-name')).textContent(), PEOPLE.ann.name);
    assert.equal(await roomItem('cat', direct).getAttribute('data-room-type'), 'direct');
    await openRoom('ann', groupId);
  });

  step('a reconnect with the cursor brings an edit and a delete made while offline', async () => {
    const ann = page('ann');
    const ben = page('ben');
    await send(ann, 'to be edited');
    await send(ann, 'to be deleted');
    await waitForMessage(ben, 'both at Ben', (m) => m.text === 'to be deleted');
    await waitFor('a cursor at Ben', () => ben.evaluate(() => window.__chatd.cursor()), Boolean);
    const socketsBefore = who.ben.sockets.length;
    const requestsBefore = who.ben.requests.length;
    // The cursor held when the link drops (read in the same turn: no event comes between).
    const cursorBefore = await ben.evaluate(() => {
      const cursor = window.__chatd.cursor();
      window.__chatd.simulateOffline(3000);
      return cursor;
    });
    await waitFor('Ben offline', () => ben.locator(tid('conn-status')).getAttribute('data-state'), (s) => s !== 'open');

    // Ann edits and deletes while Ben is away.
    const edited = ann.locator(tid('message'), { has: ann.locator(tid('message-content'), { hasText: 'to be edited' }) }).first();
    await edited.hover();
    await edited.locator(tid('edit-button')).click();
    await ann.locator(tid('edit-input')).fill('edited while Ben was away');
    await ann.locator(tid('edit-input')).press('Enter');
    await waitForMessage(ann, 'the edit at Ann', (m) => m.text === 'edited while Ben was away' && m.edited);
    const doomed = ann.locator(tid('message'), { has: ann.locator(tid('message-content'), { hasText: 'to be deleted' }) }).first();
    await doomed.hover();
    await doomed.locator(tid('delete-button')).click();
    await ann.locator(tid('delete-confirm')).click();
    await waitForMessage(ann, 'the delete at Ann', (m) => m.text === 'Message deleted');
    await sleep(300);
    assert.ok((await messages(ben)).some((m) => m.text === 'to be deleted'), 'Ben is really offline');

    await connected('ben');
    await waitFor('the edit and the delete at Ben', async () => {
      const list = await messages(ben);
      return {
        edited: list.some((m) => m.text === 'edited while Ben was away' && m.edited),
        deleted: list.filter((m) => m.text === 'Message deleted').length,
        stale: list.some((m) => m.text === 'to be edited' || m.text === 'to be deleted'),
      };
    }, (s) => s.edited && s.deleted === 1 && !s.stale);

    // It came through the cursor: the reconnect named it, nothing was fetched by after_id.
    const reconnect = who.ben.sockets.slice(socketsBefore);
    assert.ok(reconnect.length >= 1, 'Ben opened a new WebSocket');
    assert.ok(reconnect.every((url) => new URL(url).searchParams.get('cursor') === cursorBefore),
      `reconnected with the cursor held before (${cursorBefore}): ${reconnect.join(' ')}`);
    assert.deepEqual(who.ben.requests.slice(requestsBefore).filter((u) => u.includes('after_id=')), []);
    await waitFor('synced, with a newer cursor', () => ben.evaluate(() => [window.__chatd.syncing(), window.__chatd.cursor()]),
      ([syncing, cursor]) => !syncing && cursor && cursor !== cursorBefore);
    // And the live part goes on.
    await send(ann, 'after the reconnect');
    await waitForMessage(ben, 'a live message after the replay', (m) => m.text === 'after the reconnect');
    assert.equal((await messages(ben)).filter((m) => m.text === 'after the reconnect').length, 1);
  });

  step('a reload resumes from the cursor kept in sessionStorage', async () => {
    const ben = page('ben');
    const stored = await ben.evaluate((id) => sessionStorage.getItem(`chatd.cursor.${id}`), who.ben.session.user.id);
    assert.equal(stored, await ben.evaluate(() => window.__chatd.cursor()));
    const socketsBefore = who.ben.sockets.length;
    await ben.reload();
    await connected('ben');
    const [url] = who.ben.sockets.slice(socketsBefore);
    assert.ok(url && new URL(url).searchParams.get('cursor'), `the reload connected with a cursor: ${url}`);
    await waitForMessage(ben, 'the history after the reload', (m) => m.text === 'after the reconnect');
  });

  step('removed while offline: the replay takes the room away', async () => {
    const ben = page('ben');
    await ben.evaluate(() => window.__chatd.simulateOffline(2500));
    await waitFor('Ben offline', () => ben.locator(tid('conn-status')).getAttribute('data-state'), (s) => s !== 'open');
    const answer = await rest('DELETE', `/api/chat/rooms/${groupId}/members/${who.ben.session.user.id}`, undefined, who.ann.session.access_token);
    assert.equal(answer.status, 200);
    assert.equal(await roomItem('ben', groupId).count(), 1, 'still listed while offline');
    await connected('ben');
    await waitFor('the room gone at Ben after the replay', () => roomItem('ben', groupId).count(), (n) => n === 0);
    // Back in, through an add while online: member_added brings it back.
    const again = await rest('POST', `/api/chat/rooms/${groupId}/members`, { user_ids: [who.ben.session.user.id] }, who.ann.session.access_token);
    assert.equal(again.status, 200);
    await roomItem('ben', groupId).waitFor();
  });

  step('an unreadable cursor: resync_required, the rooms reload over REST, the stream goes on', async () => {
    const ben = page('ben');
    await ben.evaluate((id) => sessionStorage.setItem(`chatd.cursor.${id}`, 'not-a-cursor'), who.ben.session.user.id);
    const socketsBefore = who.ben.sockets.length;
    await ben.reload();
    await connected('ben');
    assert.equal(new URL(who.ben.sockets[socketsBefore]).searchParams.get('cursor'), 'not-a-cursor');
    await waitFor('a fresh cursor after the resync', () => ben.evaluate(() => [window.__chatd.syncing(), window.__chatd.cursor()]),
      ([syncing, cursor]) => !syncing && cursor && cursor !== 'not-a-cursor');
    const names = await roomNames(ben);
    assert.ok(names.some((r) => r.id === groupId && r.name === 'Trip 2025'), JSON.stringify(names));
    await openRoom('ben', groupId);
    await send(page('ann'), 'after the resync');
    await waitForMessage(ben, 'live after the resync', (m) => m.text === 'after the resync');
  });

  step('the last admin leaves: the longest-standing member takes over', async () => {
    await openPanel('ben');
    const ben = page('ben');
    assert.equal(await ben.locator(tid('rename-button')).isVisible(), false, 'Ben is no admin yet');
    await openPanel('ann');
    await page('ann').locator(tid('leave-button')).click();
    await page('ann').locator(tid('leave-confirm-button')).click();
    await waitFor('the room gone at Ann', () => roomItem('ann', groupId).count(), (n) => n === 0);
    assert.match(await page('ann').locator(tid('notice')).textContent(), /You left “Trip 2025”/);
    await waitFor('Ben alone, and admin', () => memberSummary(ben), (s) => s === 'ben@example.com:admin');
    await waitFor('Ben gets the admin controls', () => ben.locator(tid('rename-button')).isVisible(), (v) => v === true);
    assert.equal(await ben.locator(tid('add-members')).isVisible(), true);
    await waitFor('1 member in Ben\'s header', () => ben.locator(tid('conv-status')).textContent(), (t) => t === '1 member');
  });

  // Not a step: worth reporting even after a failure.
  test('no console errors and no uncaught exceptions', () => {
    assert.deepEqual(errors, []);
  });
});
