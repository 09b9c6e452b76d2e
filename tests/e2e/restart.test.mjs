// A real drop: chatd is stopped (SIGTERM closes the WebSockets with 1001)
// and started again on the same address and data. The client must notice,
// reconnect by itself, re-send what was pending, and show nothing twice.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { launchBrowser, newWatchedPage, sleep, startServer, waitFor } from './support.mjs';

const tid = (id) => `[data-testid="${id}"]`;
/** What Chromium itself logs while the server is down: not errors of the app. */
const WHILE_DOWN = [/^WebSocket connection to '.*' failed/, /^Failed to load resource: net::ERR_CONNECTION_REFUSED$/];

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  try {
    if (browser) await browser.close();
  } finally {
    if (server) await server.stop();
  }
});

async function register(name, email) {
  const response = await fetch(`${server.baseUrl}/api/auth/register`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name, email, password: 'password123' }),
  });
  assert.equal(response.status, 201);
  return response.json();
}

async function openAs(session, roomId, label, errors) {
  const context = await browser.newContext();
  await context.addInitScript((token) => localStorage.setItem('chatd.token', token), session.access_token);
  const page = await newWatchedPage(context, label, errors);
  await page.goto(`${server.baseUrl}/#room=${roomId}`);
  await waitFor(`${label} in the room`, () => page.locator(tid('conv-name')).textContent(), (t) => t.length > 0);
  await waitFor(`${label} connected`, () => page.locator(tid('conn-status')).getAttribute('data-state'), (s) => s === 'open');
  return page;
}

function texts(page) {
  return page.$$eval('[data-testid="message"]', (nodes) =>
    nodes.map((n) => ({
      text: n.querySelector('[data-testid="message-content"]')?.textContent,
      pending: n.dataset.pending === 'true',
      id: n.dataset.id,
    })));
}

const count = async (page, text, { pending = false } = {}) =>
  (await texts(page)).filter((m) => m.text === text && m.pending === pending).length;

test('a server restart: reconnect, re-send what was pending, nothing twice', { timeout: 60_000 }, async () => {
  const errors = [];
  const alice = await register('Alice', 'alice@example.com');
  const bob = await register('Bob', 'bob@example.com');
  const roomResponse = await fetch(`${server.baseUrl}/api/chat/rooms`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${alice.access_token}` },
    body: JSON.stringify({ receiver_id: bob.user.id }),
  });
  assert.equal(roomResponse.status, 201);
  const room = await roomResponse.json();

  const alicePage = await openAs(alice, room.id, 'alice', errors);
  const bobPage = await openAs(bob, room.id, 'bob', errors);
  const input = alicePage.locator(tid('composer-input'));
  await input.fill('before the restart');
  await input.press('Enter');
  await waitFor('Bob got it', () => count(bobPage, 'before the restart'), (n) => n === 1);

  const exit = await server.stop({ keep: true });
  assert.deepEqual(exit, { code: 0, signal: null }, 'chatd exits 0 on SIGTERM');
  await waitFor('Alice sees the link down', () => alicePage.locator(tid('conn-status')).getAttribute('data-state'), (s) => s !== 'open');
  await input.fill('sent while the server was down');
  await input.press('Enter');
  await waitFor('pending while down', () => count(alicePage, 'sent while the server was down', { pending: true }), (n) => n === 1);

  await sleep(1800); // a few reconnect attempts fail meanwhile
  server = await startServer({ port: server.port, tmp: server.tmp });
  await waitFor('Alice reconnected', () => alicePage.locator(tid('conn-status')).getAttribute('data-state'), (s) => s === 'open', 15_000);
  await waitFor('the pending message sent once', async () => ({
    sent: await count(alicePage, 'sent while the server was down'),
    pending: await count(alicePage, 'sent while the server was down', { pending: true }),
  }), (c) => c.sent === 1 && c.pending === 0);
  await waitFor('Bob reconnected and got it once', () => count(bobPage, 'sent while the server was down'), (n) => n === 1, 15_000);

  // Both messages were stored: a reload shows each once.
  await alicePage.reload();
  await waitFor('history after the restart', async () => (await texts(alicePage)).map((m) => m.text),
    (list) => JSON.stringify(list) === JSON.stringify(['before the restart', 'sent while the server was down']));

  const unexpected = errors.filter((e) => !WHILE_DOWN.some((pattern) => pattern.test(e.replace(/^\w+ (console|pageerror): /, ''))));
  assert.deepEqual(unexpected, []);
});
