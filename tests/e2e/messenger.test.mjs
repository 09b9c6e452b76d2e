// Messages people expect (SPEC section 10) in the web client: reactions,
// replies, forwarding, message search and scheduled sends, with Ann, Ben and
// Cat in three browser contexts against the real chatd. Steps run in order
// and share the browser; a step after a failed one is skipped. Every page
// reports CSP violations, and the last step asserts there were none.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { artifactsDir, launchBrowser, makePng, newWatchedPage, sleep, startServer, waitFor } from './support.mjs';

const tid = (id) => `[data-testid="${id}"]`;
const PASSWORD = 'password123';
const PEOPLE = {
  ann: { name: 'Ann Sender', email: 'ann@example.com' },
  ben: { name: 'Ben Receiver', email: 'ben@example.com' },
  cat: { name: 'Cat Third', email: 'cat@example.com' },
};
/** More messages than the first page (50) holds, so that a jump must load older history. */
const FILLERS = 55;

let server;
let browser;
/** label → {session, context, page} */
const who = {};
const errors = [];
const violations = [];
let failed = false;
/** Ann and Ben's direct room, Ann and Cat's. */
let benRoom = null;
let catRoom = null;

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
          await person.page.screenshot({ path: path.join(artifactsDir, `messenger-failure-${label}.png`), timeout: 5000 });
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

const token = (label) => who[label].session.access_token;
const page = (label) => who[label].page;

/** A signed-in page of `label` whose CSP violations land in `violations`. */
async function openAs(label) {
  const person = who[label];
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  await context.addInitScript((value) => localStorage.setItem('chatd.token', value), token(label));
  await context.exposeBinding('__reportCspViolation', (_source, report) => {
    violations.push(`${label}: ${JSON.stringify(report)}`);
  });
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      window.__reportCspViolation({ directive: event.effectiveDirective, blocked: event.blockedURI, sample: event.sample });
    });
  });
  const p = await newWatchedPage(context, label, errors);
  p.on('console', (message) => {
    if (message.text().includes('Content Security Policy')) violations.push(`${label} console: ${message.text()}`);
  });
  person.context = context;
  person.page = p;
  await p.goto(server.baseUrl);
  await signedIn(label);
  return p;
}

async function signedIn(label) {
  const p = page(label);
  await waitFor(`${label} signed in`, () => p.locator(tid('me-name')).textContent(), (t) => t === PEOPLE[label].name);
  await waitFor(`${label} connected`, () => p.locator(tid('conn-status')).getAttribute('data-state'), (s) => s === 'open', 15_000);
}

async function openRoom(label, roomId) {
  const p = page(label);
  await p.locator(`${tid('room-item')}[data-room-id="${roomId}"] button`).click();
  await waitFor(`${label} in room ${roomId}`, () => p.url(), (u) => u.endsWith(`#room=${roomId}`));
  await p.locator(tid('composer-input')).waitFor();
}

function messages(p) {
  return p.$$eval('[data-testid="message"]', (nodes) => nodes.map((node) => ({
    id: node.dataset.id ? Number(node.dataset.id) : null,
    pending: node.dataset.pending === 'true',
    text: node.querySelector('[data-testid="message-content"]')?.textContent ?? null,
    quote: node.querySelector('[data-testid="reply-quote"]')
      ? {
        id: Number(node.querySelector('[data-testid="reply-quote"]').dataset.replyId),
        name: node.querySelector('[data-testid="reply-quote-name"]').textContent,
        text: node.querySelector('[data-testid="reply-quote-text"]').textContent,
      }
      : null,
    forwarded: node.querySelector('[data-testid="forwarded-from"]')?.textContent ?? null,
    chips: Array.from(node.querySelectorAll('[data-testid="reaction-chip"]')).map((chip) => ({
      emoji: chip.dataset.emoji,
      count: Number(chip.querySelector('[data-testid="reaction-count"]').textContent),
      me: chip.getAttribute('aria-pressed') === 'true',
    })),
    flash: node.classList.contains('flash'),
  })));
}

async function waitForMessage(p, what, predicate, timeout) {
  const [found] = await waitFor(what, async () => (await messages(p)).filter(predicate), (list) => list.length > 0, timeout);
  return found;
}

/** Type and send a message; answers it as shown once the server echoed it. */
async function send(label, content) {
  const p = page(label);
  const input = p.locator(tid('composer-input'));
  await input.fill(content);
  await input.press('Enter');
  return waitForMessage(p, `"${content}" confirmed at ${label}`, (m) => m.text === content && !m.pending && m.id !== null);
}

const messageNode = (p, id) => p.locator(`${tid('message')}[data-id="${id}"]`);

/**
 * The chips under a message, compact and sorted: "🎉1 👍2*" (* when one is
 * ours). Sorted because "order of first use" counts the reactions still
 * there: taking one back may move its emoji behind another.
 */
async function chips(p, id) {
  const [shown] = (await messages(p)).filter((m) => m.id === id);
  return shown ? shown.chips.map((c) => `${c.emoji}${c.count}${c.me ? '*' : ''}`).sort().join(' ') : null;
}

/** Send plain texts over a WebSocket of the page's own (the fillers of a long history). */
function sendOverSocket(p, roomId, texts) {
  return p.evaluate(async ({ roomId: room, texts: list }) => {
    const value = localStorage.getItem('chatd.token');
    const ws = new WebSocket(`ws://${location.host}/api/chat/ws?token=${encodeURIComponent(value)}`);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error('the socket did not open'));
    });
    const ids = [];
    for (const [index, content] of list.entries()) {
      const temp = `fill-${Date.now()}-${index}`;
      const echo = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no echo for ${content}`)), 10_000);
        ws.onmessage = (event) => {
          const frame = JSON.parse(event.data);
          const data = frame.data || {};
          if (frame.type === 'new_message' && data.local_temp_id === temp) {
            clearTimeout(timer);
            resolve(data.id);
          } else if (frame.type === 'error' && frame.local_temp_id === temp) {
            clearTimeout(timer);
            reject(new Error(frame.message));
          }
        };
      });
      ws.send(JSON.stringify({ type: 'send_message', data: { room_id: room, message_type: 'text', content, local_temp_id: temp } }));
      ids.push(await echo);
    }
    ws.close();
    return ids;
  }, { roomId, texts });
}

/** Whether the message is inside the scroller's visible part. */
function inView(p, id) {
  return p.evaluate((messageId) => {
    const node = document.querySelector(`[data-testid="message"][data-id="${messageId}"]`);
    if (!node) return false;
    const box = node.getBoundingClientRect();
    const view = document.querySelector('[data-testid="message-scroller"]').getBoundingClientRect();
    return box.bottom > view.top && box.top < view.bottom;
  }, id);
}

/** A datetime-local value `seconds` from now in the page's own time zone. */
function localTimeFromNow(p, seconds) {
  return p.evaluate((ahead) => {
    const date = new Date(Date.now() + ahead * 1000);
    const pad = (n) => String(n).padStart(2, '0');
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`
      + `T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }, seconds);
}

describe('reactions, replies, forwarding, search and scheduling in the web client', { timeout: 240_000 }, () => {
  before(async () => {
    fs.mkdirSync(artifactsDir, { recursive: true });
    server = await startServer();
    browser = await launchBrowser();
    for (const [label, person] of Object.entries(PEOPLE)) {
      const answer = await rest('POST', '/api/auth/register', { ...person, password: PASSWORD });
      assert.equal(answer.status, 201, `register ${label}`);
      who[label] = { session: answer.body };
    }
    const withBen = await rest('POST', '/api/chat/rooms', { receiver_id: who.ben.session.user.id }, token('ann'));
    const withCat = await rest('POST', '/api/chat/rooms', { receiver_id: who.cat.session.user.id }, token('ann'));
    benRoom = withBen.body.id;
    catRoom = withCat.body.id;
    for (const label of ['ann', 'ben']) await openAs(label);
    await openRoom('ann', benRoom);
    await openRoom('ben', benRoom);
  });

  after(async () => {
    try {
      if (browser) await browser.close();
    } finally {
      if (server) await server.stop();
    }
  });

  let lunch = null;

  step('reactions: the picker adds one, a chip takes it back or adds ours, the other side follows live', async () => {
    const ann = page('ann');
    const ben = page('ben');
    lunch = await send('ben', 'Lunch at noon?');
    await waitForMessage(ann, 'the question at Ann', (m) => m.id === lunch.id);

    // The picker opens from the message's tools, with the focus on its first emoji; Escape closes it.
    const node = messageNode(ann, lunch.id);
    await node.hover();
    await node.locator(tid('react-button')).click();
    await node.locator(tid('reaction-picker')).waitFor();
    assert.equal(await ann.evaluate(() => document.activeElement?.dataset.emoji), '👍', 'the first emoji has the focus');
    assert.ok((await node.locator(tid('reaction-option')).count()) >= 8, 'a choice of common emoji');
    await ann.keyboard.press('Escape');
    await waitFor('the picker closed by Escape', () => node.locator(tid('reaction-picker')).count(), (n) => n === 0);
    assert.equal(await ann.evaluate(() => document.activeElement?.dataset.testid), 'react-button', 'the focus went back');

    await node.hover();
    await node.locator(tid('react-button')).click();
    await node.locator(`${tid('reaction-option')}[data-emoji="👍"]`).click();
    await waitFor('👍 at Ann, marked as hers', () => chips(ann, lunch.id), (c) => c === '👍1*');
    await waitFor('👍 live at Ben, not his', () => chips(ben, lunch.id), (c) => c === '👍1');

    // A second emoji from the picker, then Ben joins the first through its chip.
    await node.hover();
    await node.locator(tid('react-button')).click();
    await node.locator(`${tid('reaction-option')}[data-emoji="🎉"]`).click();
    await waitFor('🎉 at Ben', () => chips(ben, lunch.id), (c) => c === '🎉1 👍1');
    await messageNode(ben, lunch.id).locator(`${tid('reaction-chip')}[data-emoji="👍"]`).click();
    await waitFor('Ben in the count at Ben', () => chips(ben, lunch.id), (c) => c === '🎉1 👍2*');
    await waitFor('Ben in the count at Ann', () => chips(ann, lunch.id), (c) => c === '🎉1* 👍2*');

    // Ann's chip takes hers back; the last one out removes the chip everywhere.
    await node.locator(`${tid('reaction-chip')}[data-emoji="👍"]`).click();
    await waitFor('Ann took 👍 back', () => chips(ann, lunch.id), (c) => c === '🎉1* 👍1');
    await waitFor('Ben sees it', () => chips(ben, lunch.id), (c) => c === '🎉1 👍1*');
    await messageNode(ben, lunch.id).locator(`${tid('reaction-chip')}[data-emoji="👍"]`).click();
    await waitFor('👍 gone at Ann', () => chips(ann, lunch.id), (c) => c === '🎉1*');
    await waitFor('👍 gone at Ben', () => chips(ben, lunch.id), (c) => c === '🎉1');

    const stored = await rest('GET', `/api/chat/rooms/${benRoom}/messages`, undefined, token('ben'));
    const shown = stored.body.messages.find((m) => m.id === lunch.id);
    assert.deepEqual(shown.reactions, [{ emoji: '🎉', count: 1, me: false }], 'what the server keeps');
  });

  let question = null;
  let answer = null;

  step('replies: the quote bar (kept per room, cancelable), the quote on both sides, a click jumps to the original', async () => {
    const ann = page('ann');
    const ben = page('ben');
    question = await send('ben', 'Where do we meet?');
    const node = messageNode(ann, question.id);
    await waitForMessage(ann, 'the question at Ann', (m) => m.id === question.id);

    // Reply, then Escape in the composer cancels it.
    await node.hover();
    await node.locator(tid('reply-button')).click();
    await ann.locator(tid('reply-bar')).waitFor();
    assert.equal(await ann.locator(tid('reply-bar-name')).textContent(), `Replying to ${PEOPLE.ben.name}`);
    assert.equal(await ann.locator(tid('reply-bar-text')).textContent(), 'Where do we meet?');
    assert.equal(await ann.evaluate(() => document.activeElement?.dataset.testid), 'composer-input');
    await ann.keyboard.press('Escape');
    await waitFor('the bar gone after Escape', () => ann.locator(tid('reply-bar')).isVisible(), (v) => v === false);

    // Reply again; the bar stays with its room while Ann looks elsewhere and history grows.
    await node.hover();
    await node.locator(tid('reply-button')).click();
    await ann.locator(tid('reply-bar')).waitFor();
    await openRoom('ann', catRoom);
    assert.equal(await ann.locator(tid('reply-bar')).isVisible(), false, 'no bar in another room');
    const fillers = Array.from({ length: FILLERS }, (_, i) => `filler ${String(i + 1).padStart(2, '0')}`);
    await sendOverSocket(ben, benRoom, fillers);
    await openRoom('ann', benRoom);
    await ann.locator(tid('reply-bar')).waitFor();

    answer = await send('ann', 'At the station');
    assert.equal(await ann.locator(tid('reply-bar')).isVisible(), false, 'sending ends the reply');
    const quote = { id: question.id, name: PEOPLE.ben.name, text: 'Where do we meet?' };
    assert.deepEqual(answer.quote, quote, 'Ann sees the quote');
    await waitForMessage(ben, 'the reply with its quote at Ben', (m) => m.id === answer.id && m.quote && m.quote.id === question.id);
    const stored = await rest('GET', `/api/chat/rooms/${benRoom}/messages?limit=5&before_id=${answer.id + 1}`, undefined, token('ben'));
    assert.equal(stored.body.messages.at(-1).reply_to.id, question.id, 'sent with reply_to_id');

    // After a reload only the newest page is there: the quote's click loads older history until the original shows.
    await ann.reload();
    await signedIn('ann');
    await openRoom('ann', benRoom);
    await waitForMessage(ann, 'the reply after the reload', (m) => m.id === answer.id);
    assert.equal(await messageNode(ann, question.id).count(), 0, 'the original is not loaded yet');
    await messageNode(ann, answer.id).locator(tid('reply-quote')).click();
    await waitForMessage(ann, 'the original loaded and highlighted', (m) => m.id === question.id && m.flash);
    assert.ok(await inView(ann, question.id), 'scrolled into view');
    await waitForMessage(ann, 'the highlight fading', (m) => m.id === question.id && !m.flash, 6000);

    // The quote follows the original: deleted, it says so.
    const deleted = await rest('DELETE', `/api/chat/messages/${question.id}`, undefined, token('ben'));
    assert.equal(deleted.status, 200);
    await waitForMessage(ann, 'the quote of a deleted message', (m) => m.id === answer.id && m.quote && m.quote.text === 'Deleted message');
  });

  step('forwarding: the dialog picks 1..10 rooms, Escape closes it, the copy says whom it is from', async () => {
    const ann = page('ann');
    // Eleven more rooms, so that the limit of ten shows.
    for (let i = 1; i <= 11; i += 1) {
      const group = await rest('POST', '/api/chat/rooms', { name: `Spare ${i}`, member_ids: [] }, token('ann'));
      assert.equal(group.status, 201);
    }
    await waitFor('the spare rooms at Ann', () => ann.locator(tid('room-item')).count(), (n) => n === 13);

    const node = messageNode(ann, lunch.id);
    await node.scrollIntoViewIfNeeded();
    await node.hover();
    await node.locator(tid('forward-button')).click();
    const dialog = ann.locator(tid('forward-dialog'));
    await dialog.waitFor();
    assert.equal(await ann.locator(tid('forward-room')).count(), 13, 'every room is offered');
    assert.equal(await ann.locator(tid('forward-submit')).isDisabled(), true, 'nothing chosen, nothing to send');
    await ann.keyboard.press('Escape');
    await waitFor('the dialog closed by Escape', () => dialog.isVisible(), (v) => v === false);

    await node.hover();
    await node.locator(tid('forward-button')).click();
    await dialog.waitFor();
    // Ten at most: the rest turn off.
    const spares = ann.locator(`${tid('forward-room')}:has-text("Spare") ${tid('forward-check')}`);
    for (let i = 0; i < 10; i += 1) await spares.nth(i).check();
    assert.equal(await spares.nth(10).isDisabled(), true, 'an eleventh room cannot be chosen');
    for (let i = 0; i < 10; i += 1) await spares.nth(i).uncheck();
    await ann.locator(tid('forward-filter')).fill('Cat');
    assert.equal(await ann.locator(tid('forward-room')).count(), 1, 'the filter narrows the list');
    await ann.locator(`${tid('forward-room')}[data-room-id="${catRoom}"] ${tid('forward-check')}`).check();
    await ann.locator(tid('forward-submit')).click();
    await waitFor('the dialog closed after forwarding', () => dialog.isVisible(), (v) => v === false);

    await openRoom('ann', catRoom);
    const copy = await waitForMessage(ann, 'the copy in the room with Cat', (m) => m.text === 'Lunch at noon?');
    assert.equal(copy.forwarded, `Forwarded from ${PEOPLE.ben.name}`);
    assert.notEqual(copy.id, lunch.id);
    const atCat = await rest('GET', `/api/chat/rooms/${catRoom}/messages`, undefined, token('cat'));
    const stored = atCat.body.messages.find((m) => m.id === copy.id);
    assert.deepEqual(stored.forwarded_from, { message_id: lunch.id, sender_name: PEOPLE.ben.name });

    // Cat sees it too, with the same line.
    await openAs('cat');
    await openRoom('cat', catRoom);
    const seen = await waitForMessage(page('cat'), 'the copy at Cat', (m) => m.id === copy.id);
    assert.equal(seen.forwarded, `Forwarded from ${PEOPLE.ben.name}`);
  });

  step('search: Cyrillic without regard to case, marks built as elements, a result opens its message, "Load more"', async () => {
    const ann = page('ann');
    const ben = page('ben');
    const theatre = await send('ben', 'Встречаемся у Большого театра в семь');
    const markup = await send('ben', '<b>bold</b> & "quoted" <img src=x>');
    await openRoom('ann', catRoom);

    const input = ann.locator(tid('message-search-input'));
    await input.fill('большого');
    const result = ann.locator(`${tid('message-result')}[data-message-id="${theatre.id}"]`);
    await result.waitFor();
    assert.equal(await ann.locator(tid('room-list')).isVisible(), false, 'results take the room list\'s place');
    assert.equal(await result.locator(tid('result-room')).textContent(), PEOPLE.ben.name);
    assert.equal(await result.locator(tid('result-sender')).textContent(), PEOPLE.ben.name);
    assert.equal(await result.locator(tid('result-text')).textContent(), 'Встречаемся у Большого театра в семь');
    assert.deepEqual(await result.locator('mark').allTextContents(), ['Большого']);

    // Escaped text stays text: the markup in a message is shown, never built.
    await input.fill('bold');
    const escaped = ann.locator(`${tid('message-result')}[data-message-id="${markup.id}"]`);
    await escaped.waitFor();
    assert.equal(await escaped.locator(tid('result-text')).textContent(), '<b>bold</b> & "quoted" <img src=x>');
    assert.deepEqual(await escaped.locator('mark').allTextContents(), ['bold']);
    assert.equal(await ann.locator(`${tid('message-search-results')} b, ${tid('message-search-results')} img`).count(), 0);

    // Opening a result: the room opens and the message is brought into view, highlighted.
    await input.fill('БОЛЬШОГО');
    await result.waitFor();
    await result.locator('button').click();
    await waitFor('the room with Ben open', () => ann.url(), (u) => u.endsWith(`#room=${benRoom}`));
    await waitForMessage(ann, 'the found message highlighted', (m) => m.id === theatre.id && m.flash);
    assert.ok(await inView(ann, theatre.id));

    // An old message: the jump loads history until it is there.
    await input.fill('filler 01');
    // The results of the last query stay until the new ones come.
    const oldest = ann.locator(tid('message-result'), { has: ann.locator(tid('result-text'), { hasText: /^filler 01$/ }) });
    await oldest.waitFor();
    assert.equal(await ann.locator(tid('message-result')).count(), 1, 'only "filler 01" has "filler 01"');
    const oldId = Number(await oldest.getAttribute('data-message-id'));
    await ann.reload();
    await signedIn('ann');
    await openRoom('ann', benRoom);
    await ann.locator(tid('message-search-input')).fill('filler 01');
    await ann.locator(`${tid('message-result')}[data-message-id="${oldId}"] button`).click();
    await waitForMessage(ann, 'the old filler loaded and highlighted', (m) => m.id === oldId && m.flash);
    assert.ok(await inView(ann, oldId));

    // Pages of 20 through next_before_id.
    await ann.locator(tid('message-search-input')).fill('filler');
    await waitFor('the first page', () => ann.locator(tid('message-result')).count(), (n) => n === 20);
    await ann.locator(tid('message-search-more')).click();
    await waitFor('the second page', () => ann.locator(tid('message-result')).count(), (n) => n === 40);
    await ann.locator(tid('message-search-more')).click();
    await waitFor('every filler', () => ann.locator(tid('message-result')).count(), (n) => n === FILLERS);
    await waitFor('nothing more to load', () => ann.locator(tid('message-search-more')).isVisible(), (v) => v === false);
    const ids = (await ann.locator(tid('message-result')).evaluateAll((nodes) => nodes.map((n) => Number(n.dataset.messageId))));
    assert.deepEqual(ids, [...ids].sort((a, b) => b - a), 'newest first');
    assert.equal(new Set(ids).size, ids.length, 'no result twice');

    // Nothing found says so; Escape empties the box and brings the rooms back.
    await ann.locator(tid('message-search-input')).fill('no such words here');
    await waitFor('no results', () => ann.locator(tid('message-search-status')).textContent(), (t) => t === 'No messages found.');
    await ann.locator(tid('message-search-input')).press('Escape');
    await waitFor('the room list back', () => ann.locator(tid('room-list')).isVisible(), (v) => v === true);

    // The highlight parser refuses anything but text and <mark>.
    const parsed = await ben.evaluate(async () => {
      const { parseHighlight } = await import('/static/search.js');
      return {
        plain: parseHighlight('a &lt;b&gt; &amp; &quot;c&quot; &#39;d&#39; <mark>e</mark>'),
        tag: parseHighlight('<mark>x</mark><img src=x onerror=alert(1)>'),
        nested: parseHighlight('<mark><mark>x</mark></mark>'),
        open: parseHighlight('<mark>x'),
      };
    });
    assert.deepEqual(parsed.plain, [{ text: 'a <b> & "c" \'d\' ', mark: false }, { text: 'e', mark: true }]);
    assert.equal(parsed.tag, null);
    assert.equal(parsed.nested, null);
    assert.equal(parsed.open, null);
  });

  step('scheduling: a message set a few seconds ahead waits in the list, then arrives; a cancelled one never does', async () => {
    const ann = page('ann');
    const ben = page('ben');
    await openRoom('ann', benRoom);
    const input = ann.locator(tid('composer-input'));

    // A time in the past is refused before anything is sent.
    await ann.locator(tid('schedule-button')).click();
    await ann.locator(tid('schedule-row')).waitFor();
    assert.equal(await ann.locator(tid('send-button')).textContent(), 'Schedule');
    await ann.locator(tid('schedule-input')).fill(await localTimeFromNow(ann, -60));
    await input.fill('Too late');
    await input.press('Enter');
    await waitFor('the past refused', () => ann.locator(tid('composer-error')).textContent(), (t) => /future/.test(t));
    assert.equal(await input.inputValue(), 'Too late', 'the text stays');

    // Three seconds ahead.
    const soon = 'See you in a moment (scheduled)';
    await ann.locator(tid('schedule-input')).fill(await localTimeFromNow(ann, 3));
    await input.fill(soon);
    await input.press('Enter');
    const item = ann.locator(tid('scheduled-item'), { hasText: soon });
    await waitFor('listed as scheduled', () => item.getAttribute('data-id'), (id) => Number(id) > 0);
    assert.equal(await ann.locator(tid('schedule-row')).isVisible(), false, 'the picker closes after scheduling');
    assert.equal(await ann.locator(tid('send-button')).textContent(), 'Send');
    assert.equal((await messages(ben)).some((m) => m.text === soon), false, 'not delivered yet');
    assert.equal((await messages(ann)).some((m) => m.text === soon), false, 'not in the conversation yet');
    const listed = await rest('GET', '/api/chat/scheduled', undefined, token('ann'));
    assert.equal(listed.body.scheduled.length, 1);
    assert.equal(listed.body.scheduled[0].content, soon);

    await waitForMessage(ben, 'the scheduled message at Ben', (m) => m.text === soon, 15_000);
    await waitForMessage(ann, 'the scheduled message at Ann', (m) => m.text === soon && !m.pending);
    await waitFor('gone from the list', () => item.count(), (n) => n === 0);
    assert.equal(await ann.locator(tid('scheduled-box')).isVisible(), false, 'nothing left waiting');

    // Files wait too: an image with a caption.
    await ann.locator(tid('schedule-button')).click();
    await ann.locator(tid('file-input')).setInputFiles({ name: 'later.png', mimeType: 'image/png', buffer: makePng(32, 24) });
    await ann.locator(tid('attachment-chip')).waitFor();
    await ann.locator(tid('schedule-input')).fill(await localTimeFromNow(ann, 3));
    await input.fill('a picture, later');
    await input.press('Enter');
    const photo = ann.locator(tid('scheduled-item'), { hasText: 'Photo · a picture, later' });
    await waitFor('the photo listed', () => photo.getAttribute('data-id'), (id) => Number(id) > 0);
    await waitFor('the photo at Ben', async () => (await ben.$$eval('[data-testid="message"][data-type="image"]',
      (nodes) => nodes.map((n) => n.querySelector('[data-testid="message-content"]')?.textContent))).includes('a picture, later'), Boolean, 15_000);
    await waitFor('the photo gone from the list', () => photo.count(), (n) => n === 0);

    // One a minute ahead, cancelled.
    const never = 'This one is cancelled';
    await ann.locator(tid('schedule-button')).click();
    await ann.locator(tid('schedule-input')).fill(await localTimeFromNow(ann, 60));
    await input.fill(never);
    await ann.locator(tid('send-button')).click();
    const cancelled = ann.locator(tid('scheduled-item'), { hasText: never });
    await waitFor('listed', () => cancelled.getAttribute('data-id'), (id) => Number(id) > 0);
    // The list survives a reload (it comes from GET /scheduled).
    await ann.reload();
    await signedIn('ann');
    await openRoom('ann', benRoom);
    await ann.locator(tid('scheduled-toggle')).click();
    await cancelled.locator(tid('scheduled-cancel')).click();
    await waitFor('gone after cancelling', () => cancelled.count(), (n) => n === 0);
    const left = await rest('GET', '/api/chat/scheduled', undefined, token('ann'));
    assert.deepEqual(left.body.scheduled, [], 'cancelled on the server');
    await sleep(300);
    assert.equal((await messages(ben)).some((m) => m.text === never), false);
  });

  test('no CSP violation, console error or uncaught exception', () => {
    assert.deepEqual(violations, []);
    assert.deepEqual(errors, []);
  });
});
