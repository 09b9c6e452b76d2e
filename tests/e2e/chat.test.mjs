// End-to-end test of the web client against the real chatd: two people in
// two browser contexts, then a phone-sized third. Steps run in order and
// share the browser; a step after a failed one is skipped.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  artifactsDir,
  launchBrowser,
  makePng,
  makeWav,
  newWatchedPage,
  sleep,
  startServer,
  waitFor,
} from './support.mjs';

const tid = (id) => `[data-testid="${id}"]`;
const ALICE = { name: 'Alice Archer', email: 'alice@example.com', password: 'correct horse 1' };
const BOB = { name: 'Bob Builder', email: 'bob@example.com', password: 'battery staple 2' };

let server;
let browser;
let alice; // {context, page}
let bob;
const errors = [];
let failed = false;
let roomId = null;

/** A test step that is skipped once an earlier one failed (it would only fail after it). */
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
      await screenshotAll('failure');
      if (server) error.message += `\n--- chatd output (tail) ---\n${server.logs().slice(-4000)}`;
      throw error;
    }
  });
}

/** Screenshots of every open page, to see what a failed step left on screen. */
async function screenshotAll(prefix) {
  for (const [label, who] of [['alice', alice], ['bob', bob]]) {
    if (!who || who.page.isClosed()) continue;
    try {
      await who.page.screenshot({ path: path.join(artifactsDir, `${prefix}-${label}.png`), timeout: 5000 });
    } catch {
      // The page is gone; nothing to show.
    }
  }
}

/** What the message list shows, in order. */
function messages(page) {
  return page.$$eval('[data-testid="message"]', (nodes) =>
    nodes.map((node) => ({
      id: node.dataset.id ? Number(node.dataset.id) : null,
      tempId: node.dataset.tempId || null,
      pending: node.dataset.pending === 'true',
      type: node.dataset.type,
      own: node.dataset.own === 'true',
      text: node.querySelector('[data-testid="message-content"]')?.textContent ?? null,
      edited: Boolean(node.querySelector('[data-testid="message-edited"]')),
      status: node.querySelector('[data-testid="message-status"]')?.dataset.status ?? null,
      likes: node.querySelector('[data-testid="like-count"]')?.textContent ?? null,
      liked: node.querySelector('[data-testid="like-button"]')?.getAttribute('aria-pressed') === 'true',
      images: Array.from(node.querySelectorAll('img[data-testid="message-image"]')).map((img) => ({
        src: img.src,
        loaded: img.complete && img.naturalWidth > 0,
        width: img.naturalWidth,
      })),
      audio: Array.from(node.querySelectorAll('audio[data-testid="message-audio"]')).map((a) => a.src),
      duration: node.querySelector('[data-testid="message-duration"]')?.textContent ?? null,
      files: Array.from(node.querySelectorAll('[data-testid="message-file"]')).map((a) => a.textContent),
    })),
  );
}

function messageWithText(page, text) {
  return page.locator(tid('message'), { has: page.locator(tid('message-content'), { hasText: text }) }).first();
}

async function waitForMessage(page, what, predicate, timeout) {
  return waitFor(what, async () => (await messages(page)).filter(predicate), (found) => found.length > 0, timeout);
}

function assertNoDuplicates(list, who) {
  const ids = list.filter((m) => m.id !== null).map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, `${who} shows a message twice: ${ids.join(',')}`);
  const sorted = [...ids].sort((a, b) => a - b);
  assert.deepEqual(ids, sorted, `${who} shows messages out of order`);
}

async function text(page, testid) {
  return (await page.locator(tid(testid)).first().textContent()) ?? '';
}

async function register(page, user) {
  await page.goto(server.baseUrl);
  await page.locator(tid('show-register')).click();
  await page.locator(tid('register-name')).fill(user.name);
  await page.locator(tid('register-email')).fill(user.email);
  await page.locator(tid('register-password')).fill(user.password);
  await page.locator(tid('register-submit')).click();
  await waitFor(`${user.name} signed in`, () => text(page, 'me-name'), (t) => t === user.name);
  await waitFor(`${user.name}'s live link`, () => page.locator(tid('conn-status')).getAttribute('data-state'), (s) => s === 'open');
}

async function send(page, content) {
  const input = page.locator(tid('composer-input'));
  await input.fill(content);
  await input.press('Enter');
}

describe('chatd web client', { timeout: 110_000 }, () => {
  before(async () => {
    fs.mkdirSync(artifactsDir, { recursive: true });
    server = await startServer();
    browser = await launchBrowser();
    const desktop = { viewport: { width: 1200, height: 800 } };
    const aliceContext = await browser.newContext(desktop);
    const bobContext = await browser.newContext(desktop);
    alice = { context: aliceContext, page: await newWatchedPage(aliceContext, 'alice', errors) };
    bob = { context: bobContext, page: await newWatchedPage(bobContext, 'bob', errors) };
  });

  after(async () => {
    try {
      if (browser) await browser.close();
    } finally {
      if (server) await server.stop();
    }
  });

  step('two people register and get a live connection', async () => {
    await register(alice.page, ALICE);
    await register(bob.page, BOB);
    const token = await alice.page.evaluate(() => localStorage.getItem('chatd.token'));
    assert.ok(token && token.split('.').length === 3, 'the token is kept in localStorage');
    assert.equal(await alice.page.locator(tid('rooms-empty')).isVisible(), true);
  });

  step('Alice finds Bob by email and opens a direct room', async () => {
    const page = alice.page;
    await page.locator(tid('search-input')).fill('bob@exa');
    const result = page.locator(`${tid('search-result')}[data-email="${BOB.email}"]`);
    await result.waitFor();
    assert.equal(await page.locator(tid('search-result')).count(), 1, 'the caller is not in the results');
    await result.locator('button').click();
    await waitFor('the conversation with Bob', () => text(page, 'conv-name'), (t) => t === BOB.name);
    await waitFor('Bob shown online', () => text(page, 'conv-status'), (t) => t === 'online');
    const item = page.locator(tid('room-item')).first();
    roomId = Number(await item.getAttribute('data-room-id'));
    assert.ok(roomId > 0);
    assert.equal(await item.locator(tid('room-online')).getAttribute('data-online'), 'true');
    assert.equal(await page.locator(tid('search-results')).isVisible(), false);
    assert.match(page.url(), new RegExp(`#room=${roomId}$`));
  });

  step('text messages: echo replaces the pending one, unread badge, read receipt', async () => {
    await send(alice.page, 'Hello Bob');
    const [sent] = await waitForMessage(alice.page, 'Alice\'s message confirmed', (m) => m.text === 'Hello Bob' && !m.pending);
    assert.equal(sent.own, true);
    assert.equal(sent.status, 'sent');
    assertNoDuplicates(await messages(alice.page), 'Alice');
    assert.equal((await messages(alice.page)).filter((m) => m.text === 'Hello Bob').length, 1);

    // Bob's list gets the new room live, with an unread badge and a preview.
    const bobItem = bob.page.locator(`${tid('room-item')}[data-room-id="${roomId}"]`);
    await bobItem.waitFor();
    await waitFor('unread badge 1', () => bobItem.locator(tid('room-unread')).textContent(), (t) => t === '1');
    assert.equal(await bobItem.locator(tid('room-unread')).isVisible(), true);
    assert.equal(await bobItem.locator(tid('room-name')).textContent(), ALICE.name);
    assert.equal(await bobItem.locator(tid('room-preview')).textContent(), 'Hello Bob');
    assert.equal(await bobItem.locator(tid('room-online')).getAttribute('data-online'), 'true');

    await bobItem.locator('button').click();
    await waitForMessage(bob.page, 'Bob sees Hello Bob', (m) => m.text === 'Hello Bob' && !m.own);
    await waitFor('badge cleared', () => bobItem.locator(tid('room-unread')).isVisible(), (v) => v === false);
    await waitForMessage(alice.page, '"Read" on Alice\'s message', (m) => m.text === 'Hello Bob' && m.status === 'read');
    assert.match(await messageWithText(alice.page, 'Hello Bob').locator(tid('message-status')).textContent(), /Read/);
  });

  step('typing indicator, Enter sends and Shift+Enter makes a new line', async () => {
    const input = bob.page.locator(tid('composer-input'));
    await input.click();
    await input.pressSequentially('Hi Al', { delay: 20 });
    await waitFor('"Bob Builder is typing…"', () => text(alice.page, 'typing-indicator'), (t) => t === `${BOB.name} is typing…`);
    // The room list says so too.
    await waitFor('typing in the room list', () => alice.page.locator(tid('room-preview')).first().textContent(), (t) => t === 'typing…');
    await input.pressSequentially('ice', { delay: 10 });
    await input.press('Shift+Enter');
    await input.pressSequentially('second line');
    await input.press('Enter');
    await waitForMessage(alice.page, 'a two-line message', (m) => m.text === 'Hi Alice\nsecond line' && !m.own);
    await waitFor('the indicator gone', () => text(alice.page, 'typing-indicator'), (t) => t === '');
    assert.equal(await input.inputValue(), '', 'the composer is emptied');

    // Stopping without sending clears it after 3 s idle.
    await input.pressSequentially('hmm');
    await waitFor('typing shown again', () => text(alice.page, 'typing-indicator'), (t) => t.includes('typing'));
    await waitFor('typing cleared after idling', () => text(alice.page, 'typing-indicator'), (t) => t === '', 8000);
    await input.fill('');
  });

  step('an image: chips before sending, inline image after, no duplicate', async () => {
    const page = alice.page;
    const png = makePng(96, 64);
    await page.locator(tid('file-input')).setInputFiles({ name: 'gradient.png', mimeType: 'image/png', buffer: png });
    // A second file dropped onto the conversation.
    const dataTransfer = await page.evaluateHandle(() => {
      const transfer = new DataTransfer();
      transfer.items.add(new File(['some notes\n'], 'notes.txt', { type: 'text/plain' }));
      return transfer;
    });
    await page.locator(tid('message-scroller')).dispatchEvent('dragenter', { dataTransfer });
    assert.equal(await page.locator(tid('drop-overlay')).isVisible(), true, 'the drop zone shows');
    await page.locator(tid('message-scroller')).dispatchEvent('drop', { dataTransfer });
    const chips = page.locator(tid('attachment-chip'));
    await waitFor('two chips', () => chips.count(), (n) => n === 2);
    assert.equal(await page.locator(tid('drop-overlay')).isVisible(), false);
    assert.equal(await chips.nth(1).locator(tid('chip-name')).textContent(), 'notes.txt');
    assert.equal(await chips.nth(0).locator(tid('chip-name')).textContent(), 'gradient.png');
    assert.match(await chips.nth(0).locator(tid('chip-size')).textContent(), /^\d+(\.\d)? (B|KB)$/);
    await chips.nth(1).locator(tid('chip-remove')).click();
    await waitFor('one chip left', () => chips.count(), (n) => n === 1);

    await send(page, 'Look at this');
    const [mine] = await waitForMessage(page, 'the image confirmed and loaded',
      (m) => m.type === 'image' && !m.pending && m.images.length === 1 && m.images[0].loaded);
    assert.equal(mine.images[0].width, 96);
    assert.equal(mine.text, 'Look at this');
    assert.equal(await chips.count(), 0, 'chips are cleared after sending');
    await waitFor('progress hidden', () => page.locator(tid('send-progress')).isVisible(), (v) => v === false);
    assert.equal((await messages(page)).filter((m) => m.type === 'image').length, 1);

    const [theirs] = await waitForMessage(bob.page, 'Bob sees the image',
      (m) => m.type === 'image' && m.images.length === 1 && m.images[0].loaded);
    // The image itself, or its thumbnail once made (a 96 px image keeps its size).
    assert.match(theirs.images[0].src, new RegExp(`^${server.baseUrl}/static/chat_files/(images|thumbnails)/`));
    assert.equal(theirs.images[0].width, 96);
  });

  step('mixed files make a file message: the image inline, the text file as a download link', async () => {
    const page = bob.page;
    await page.locator(tid('file-input')).setInputFiles([
      { name: 'tiny.png', mimeType: 'image/png', buffer: makePng(40, 30) },
      { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('line one\nline two\n') },
    ]);
    await waitFor('two chips', () => page.locator(tid('attachment-chip')).count(), (n) => n === 2);
    // The progress line shows while the files are read and sent, and goes with the echo.
    await page.evaluate(() => {
      window.__progressSeen = false;
      const node = document.querySelector('[data-testid="send-progress"]');
      new MutationObserver(() => {
        if (!node.hidden) window.__progressSeen = true;
      }).observe(node, { attributes: true, attributeFilter: ['hidden'] });
    });
    await page.locator(tid('composer-input')).press('Enter');
    const [mixed] = await waitForMessage(alice.page, 'the mixed message', (m) => m.type === 'file' && m.files.length === 1);
    assert.equal(mixed.images.length, 1, 'the image of a file message is still shown inline');
    assert.match(mixed.files[0], /notes\.txt/);
    assert.match(mixed.files[0], /18 B/);
    const link = alice.page.locator(`${tid('message-file')}`).first();
    assert.match(await link.getAttribute('href'), new RegExp(`^${server.baseUrl}/static/chat_files/files/`));
    assert.equal(await link.getAttribute('download'), 'notes.txt');
    assert.equal(await page.evaluate(() => window.__progressSeen), true, 'the progress line was shown');
    await waitFor('the progress line gone', () => page.locator(tid('send-progress')).isVisible(), (v) => v === false);
  });

  step('a voice file is sent with its duration and plays inline', async () => {
    const page = bob.page;
    await page.locator(tid('file-input')).setInputFiles({ name: 'tone.wav', mimeType: 'audio/wav', buffer: makeWav(1.5) });
    const chip = page.locator(tid('attachment-chip'));
    await waitFor('the duration in the chip', () => chip.locator(tid('chip-size')).textContent(), (t) => t.endsWith(' · 0:01'));
    await page.locator(tid('send-button')).click();
    const [voice] = await waitForMessage(alice.page, 'the voice message', (m) => m.type === 'voice' && m.audio.length === 1);
    assert.equal(voice.duration, '0:01');
    assert.ok(voice.audio[0].startsWith(`${server.baseUrl}/static/chat_files/voices/`), voice.audio[0]);
    const playable = await alice.page.locator('audio[data-testid="message-audio"]').first()
      .evaluate((audio) => new Promise((resolve) => {
        if (audio.readyState >= 1) return resolve(audio.duration);
        audio.addEventListener('loadedmetadata', () => resolve(audio.duration), { once: true });
        audio.addEventListener('error', () => resolve(-1), { once: true });
        audio.load();
      }));
    assert.ok(Math.abs(playable - 1.5) < 0.1, `the stored file plays for 1.5 s (got ${playable})`);
  });

  step('a recorded voice message is converted to WAV and sent', async (t) => {
    const page = bob.page;
    if (!(await page.locator(tid('record-button')).isVisible())) {
      t.skip('no MediaRecorder in this browser');
      return;
    }
    await page.locator(tid('record-button')).click();
    await page.locator(tid('recording-bar')).waitFor();
    await sleep(1300);
    await page.locator(tid('record-stop')).click();
    const chip = page.locator(tid('attachment-chip'));
    await waitFor('the recording as a chip', () => chip.locator(tid('chip-name')).textContent(), (n) => /^voice_.*\.wav$/.test(n));
    await page.locator(tid('send-button')).click();
    const voices = await waitFor('the recorded voice message', async () => (await messages(alice.page)).filter((m) => m.type === 'voice'),
      (list) => list.length === 2);
    assert.match(voices[1].duration, /^0:0[1-3]$/);
    assert.match(voices[1].audio[0], /\/static\/chat_files\/voices\/[^?]*\.wav(\?|$)/);
  });

  step('a file the server refuses shows its error beside the composer', async () => {
    const page = alice.page;
    await page.locator(tid('file-input')).setInputFiles({ name: 'broken.png', mimeType: 'image/png', buffer: Buffer.from('this is not a png at all') });
    await page.locator(tid('send-button')).click();
    const error = page.locator(tid('composer-error'));
    await error.waitFor();
    assert.match(await error.textContent(), /broken\.png/, 'the error names the file');
    const pendingError = page.locator(tid('pending-error'));
    await pendingError.waitFor();
    await pendingError.locator(tid('discard-button')).click();
    await waitFor('the failed message discarded', async () => (await messages(page)).filter((m) => m.pending).length, (n) => n === 0);
    assert.equal((await messages(bob.page)).filter((m) => m.text === null && m.type === 'image').length, 0);
    // The refusal is the upload's answer over HTTP now, which the browser logs; that line, once, is expected.
    const logged = 'alice console: Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)';
    const refused = await waitFor('the upload refused with 422', () => errors.indexOf(logged), (i) => i >= 0);
    errors.splice(refused, 1);
  });

  step('likes, edits and deletions show up live on the other side', async () => {
    // Bob likes Alice's first message.
    const bobHello = messageWithText(bob.page, 'Hello Bob');
    await bobHello.hover();
    await bobHello.locator(tid('like-button')).click();
    await waitForMessage(bob.page, 'Bob\'s like', (m) => m.text === 'Hello Bob' && m.liked && m.likes === '1');
    await waitForMessage(alice.page, 'the like seen by Alice', (m) => m.text === 'Hello Bob' && m.likes === '1' && !m.liked);

    // Alice edits it.
    const aliceHello = messageWithText(alice.page, 'Hello Bob');
    await aliceHello.hover();
    await aliceHello.locator(tid('edit-button')).click();
    const editor = alice.page.locator(tid('edit-input'));
    await editor.fill('Hello Bob, edited');
    await editor.press('Enter');
    await waitForMessage(alice.page, 'the edit on Alice\'s side', (m) => m.text === 'Hello Bob, edited' && m.edited);
    await waitForMessage(bob.page, 'the edit live on Bob\'s side', (m) => m.text === 'Hello Bob, edited' && m.edited && m.likes === '1');

    // Alice deletes a message she regrets.
    await send(alice.page, 'oops, wrong chat');
    await waitForMessage(bob.page, 'the regretted message', (m) => m.text === 'oops, wrong chat');
    const oops = messageWithText(alice.page, 'oops, wrong chat');
    await oops.hover();
    await oops.locator(tid('delete-button')).click();
    await alice.page.locator(tid('delete-confirm')).click();
    await waitFor('deleted on Alice\'s side', async () => (await messages(alice.page)).filter((m) => m.text === 'Message deleted').length, (n) => n === 1);
    await waitFor('deleted live on Bob\'s side', async () => {
      const list = await messages(bob.page);
      return { deleted: list.filter((m) => m.text === 'Message deleted').length, oops: list.filter((m) => m.text === 'oops, wrong chat').length };
    }, (c) => c.deleted === 1 && c.oops === 0);
    await waitFor('the preview says so', () => bob.page.locator(tid('room-preview')).first().textContent(), (t) => t === 'Message deleted');

    await alice.page.mouse.move(0, 0);
    await alice.page.screenshot({ path: path.join(artifactsDir, 'conversation.png') });

    // Bob unlikes.
    await bobHello.hover();
    await bobHello.locator(tid('like-button')).click();
    await waitForMessage(alice.page, 'the unlike seen by Alice', (m) => m.text === 'Hello Bob, edited' && m.likes === '');
  });

  step('presence: Bob leaving and coming back is shown live', async () => {
    await bob.page.close();
    await waitFor('Bob offline', () => text(alice.page, 'conv-status'), (t) => t === 'offline');
    assert.equal(await alice.page.locator(tid('room-online')).first().getAttribute('data-online'), 'false');
    bob.page = await newWatchedPage(bob.context, 'bob', errors);
    await bob.page.goto(`${server.baseUrl}/#room=${roomId}`);
    await waitFor('Bob signed in again from the kept token', () => text(bob.page, 'me-name'), (t) => t === BOB.name);
    await waitFor('Bob online', () => text(alice.page, 'conv-status'), (t) => t === 'online');
    await waitFor('Bob\'s room reopened from the address', () => text(bob.page, 'conv-name'), (t) => t === ALICE.name);
  });

  step('a reload keeps the history', async () => {
    const page = alice.page;
    const beforeReload = (await messages(page)).map((m) => [m.id, m.text]);
    assert.ok(beforeReload.length >= 6);
    await page.reload();
    await waitFor('the room reopened', () => text(page, 'conv-name'), (t) => t === BOB.name);
    await waitFor('the same history', async () => (await messages(page)).map((m) => [m.id, m.text]),
      (list) => JSON.stringify(list) === JSON.stringify(beforeReload));
    await waitForMessage(page, 'the image after reload', (m) => m.type === 'image' && m.images[0]?.loaded);
    const list = await messages(page);
    assert.ok(list.some((m) => m.text === 'Hello Bob, edited' && m.edited));
    assert.ok(list.some((m) => m.text === 'Message deleted'));
    assert.ok(list.find((m) => m.text === 'Hello Bob, edited').status === 'read');
    assertNoDuplicates(list, 'Alice after reload');
  });

  step('a dropped connection reconnects by itself and catches up without duplicates', async () => {
    const page = alice.page;
    await waitFor('Alice connected', () => page.locator(tid('conn-status')).getAttribute('data-state'), (s) => s === 'open');
    await page.evaluate(() => window.__chatd.simulateOffline(2500));
    await waitFor('Alice offline', () => page.locator(tid('conn-status')).getAttribute('data-state'), (s) => s !== 'open');

    // Bob writes while Alice is away; Alice writes too (it waits as pending).
    await send(bob.page, 'while you were away');
    await waitForMessage(bob.page, 'Bob\'s message confirmed', (m) => m.text === 'while you were away' && !m.pending);
    await send(page, 'sent while offline');
    await waitForMessage(page, 'Alice\'s message pending', (m) => m.text === 'sent while offline' && m.pending);
    assert.equal((await messages(page)).filter((m) => m.text === 'while you were away').length, 0, 'Alice is really offline');

    await waitFor('Alice reconnected', () => page.locator(tid('conn-status')).getAttribute('data-state'), (s) => s === 'open', 15_000);
    await waitFor('caught up, each message once', async () => {
      const list = await messages(page);
      return {
        away: list.filter((m) => m.text === 'while you were away').length,
        offline: list.filter((m) => m.text === 'sent while offline' && !m.pending).length,
        pending: list.filter((m) => m.pending).length,
      };
    }, (c) => c.away === 1 && c.offline === 1 && c.pending === 0);
    await waitFor('Bob got Alice\'s message once', async () => (await messages(bob.page)).filter((m) => m.text === 'sent while offline').length, (n) => n === 1);
    await sleep(300); // any late duplicate echo would show by now
    assertNoDuplicates(await messages(page), 'Alice after reconnecting');
    assertNoDuplicates(await messages(bob.page), 'Bob');
    assert.equal((await messages(bob.page)).filter((m) => m.text === 'sent while offline').length, 1);
  });

  step('older history loads when scrolling to the top', async () => {
    // 60 more messages from Bob, sent over a second WebSocket of his.
    const sent = await bob.page.evaluate(async (room) => {
      const token = localStorage.getItem('chatd.token');
      const ws = new WebSocket(`ws://${location.host}/api/chat/ws?token=${encodeURIComponent(token)}`);
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = reject;
      });
      const wanted = new Set();
      const echoed = new Promise((resolve) => {
        ws.onmessage = (event) => {
          const frame = JSON.parse(event.data);
          if (frame.type === 'new_message' && wanted.delete(frame.data.local_temp_id) && wanted.size === 0) resolve();
        };
      });
      for (let i = 1; i <= 60; i += 1) {
        const id = `bulk-${i}-${Date.now()}`;
        wanted.add(id);
        ws.send(JSON.stringify({ type: 'send_message', data: { room_id: room, message_type: 'text', content: `bulk ${i}`, local_temp_id: id } }));
      }
      await Promise.race([echoed, new Promise((resolve) => setTimeout(resolve, 8000))]);
      ws.close();
      return 60 - wanted.size;
    }, roomId);
    assert.equal(sent, 60);

    const page = alice.page;
    await waitForMessage(page, 'the last bulk message live', (m) => m.text === 'bulk 60');
    const total = (await messages(page)).length;
    await page.reload();
    await waitFor('the newest page after reload', async () => (await messages(page)).length, (n) => n === 50);
    await page.locator(tid('load-older')).waitFor();
    await page.locator(tid('message-scroller')).evaluate((node) => { node.scrollTop = 0; });
    await waitFor('all older messages', async () => (await messages(page)).length, (n) => n === total);
    const list = await messages(page);
    assertNoDuplicates(list, 'Alice after loading older');
    assert.equal(list[0].text, 'Hello Bob, edited');
    assert.equal(await page.locator(tid('load-older')).count(), 0, 'nothing older is left');
  });

  step('a phone-sized screen shows one pane at a time, with a back button', async () => {
    const context = await browser.newContext({ viewport: { width: 390, height: 780 }, hasTouch: true, isMobile: true });
    const page = await newWatchedPage(context, 'phone', errors);
    await page.goto(server.baseUrl);
    await page.locator(tid('login-email')).fill(ALICE.email);
    await page.locator(tid('login-password')).fill(ALICE.password);
    await page.locator(tid('login-submit')).click();
    await waitFor('signed in on the phone', () => text(page, 'me-name'), (t) => t === ALICE.name);
    const item = page.locator(tid('room-item')).first();
    await item.waitFor();
    assert.equal(await page.locator(tid('conversation')).isVisible(), false);
    await item.locator('button').click();
    await page.locator(tid('composer-input')).waitFor();
    assert.equal(await page.locator(tid('room-list')).isVisible(), false, 'the list is hidden behind the conversation');
    assert.equal(await page.locator(tid('back-button')).isVisible(), true);
    await waitForMessage(page, 'history on the phone', (m) => m.text === 'bulk 60');
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `no horizontal scrolling (${width}px)`);
    await page.screenshot({ path: path.join(artifactsDir, 'phone.png') });
    await page.locator(tid('back-button')).click();
    await page.locator(tid('room-list')).waitFor();
    assert.equal(await page.locator(tid('conversation')).isVisible(), false);

    await page.locator(tid('logout-button')).click();
    await page.locator(tid('login-form')).waitFor();
    assert.equal(await page.evaluate(() => localStorage.getItem('chatd.token')), null);
    await context.close();
  });

  // Not a step: worth reporting even after a failure.
  test('no console errors and no uncaught exceptions', () => {
    assert.deepEqual(errors, []);
  });
});
