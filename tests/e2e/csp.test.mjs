// The web client under its Content Security Policy: logging in, sending a
// message, an image and a voice file must not trip the policy once (no
// `securitypolicyviolation` event, no console line about it). A last check
// makes a violation on purpose, to show that one would be caught.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { launchBrowser, makePng, makeWav, newWatchedPage, startServer, waitFor } from './support.mjs';

const tid = (id) => `[data-testid="${id}"]`;
const PASSWORD = 'password123';

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

async function api(path, body, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(`${server.baseUrl}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
  assert.ok(response.status === 200 || response.status === 201, `${path}: ${response.status}`);
  return response.json();
}

/**
 * A page whose CSP violations land in `violations`: each
 * `securitypolicyviolation` event (reported through a binding, so the page's
 * own scripts cannot hide it) and each console line that names the policy.
 */
async function watchedForCsp(label, violations, errors) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  await context.exposeBinding('__reportCspViolation', (_source, report) => {
    violations.push(`${label} event: ${JSON.stringify(report)}`);
  });
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      window.__reportCspViolation({
        directive: event.effectiveDirective,
        blocked: event.blockedURI,
        sample: event.sample,
        source: `${event.sourceFile}:${event.lineNumber}`,
      });
    });
  });
  const page = await newWatchedPage(context, label, errors);
  page.on('console', (message) => {
    if (message.text().includes('Content Security Policy')) violations.push(`${label} console: ${message.text()}`);
  });
  return { context, page };
}

async function logIn(page, email) {
  const response = await page.goto(server.baseUrl);
  const policy = response.headers()['content-security-policy'] || '';
  assert.match(policy, /script-src 'self';/, 'the page is served with its policy');
  assert.match(policy, /style-src 'self';/);
  assert.equal(response.headers()['x-frame-options'], 'DENY');
  assert.equal(response.headers()['referrer-policy'], 'no-referrer');
  await page.locator(tid('login-email')).fill(email);
  await page.locator(tid('login-password')).fill(PASSWORD);
  await page.locator(tid('login-submit')).click();
  await waitFor(`${email} connected`, () => page.locator(tid('conn-status')).getAttribute('data-state'), (s) => s === 'open');
}

function shownMessages(page) {
  return page.$$eval('[data-testid="message"]', (nodes) =>
    nodes.map((node) => ({
      pending: node.dataset.pending === 'true',
      type: node.dataset.type,
      text: node.querySelector('[data-testid="message-content"]')?.textContent ?? null,
      images: Array.from(node.querySelectorAll('img[data-testid="message-image"]')).map((img) => ({
        loaded: img.complete && img.naturalWidth > 0,
        alt: img.alt,
      })),
      audio: node.querySelectorAll('audio[data-testid="message-audio"]').length,
    })));
}

async function waitForShown(page, what, predicate) {
  return waitFor(what, async () => (await shownMessages(page)).filter(predicate), (found) => found.length > 0);
}

test('the client works under its CSP without a single violation', { timeout: 60_000 }, async () => {
  const ann = await api('/api/auth/register', { name: 'Ann Policy', email: 'ann@example.com', password: PASSWORD });
  const ben = await api('/api/auth/register', { name: 'Ben Policy', email: 'ben@example.com', password: PASSWORD });
  const room = await api('/api/chat/rooms', { receiver_id: ben.user.id }, ann.access_token);

  const violations = [];
  const errors = [];
  const a = await watchedForCsp('ann', violations, errors);
  const b = await watchedForCsp('ben', violations, errors);
  await logIn(a.page, 'ann@example.com');
  await logIn(b.page, 'ben@example.com');
  for (const who of [a, b]) {
    await who.page.locator(`${tid('room-item')}[data-room-id="${room.id}"] button`).click();
    await who.page.locator(tid('composer-input')).waitFor();
  }

  const input = a.page.locator(tid('composer-input'));
  await input.fill('Hello under a strict policy');
  await input.press('Enter');
  await waitForShown(b.page, 'the text at Ben', (m) => m.text === 'Hello under a strict policy');

  // The pending preview is a blob: image; the name carries a bidi override
  // that the server must not hand back.
  await a.page.locator(tid('file-input')).setInputFiles({
    name: 'invoice\u202Efdp.png', mimeType: 'image/png', buffer: makePng(64, 48),
  });
  await a.page.locator(tid('attachment-chip')).waitFor();
  await input.fill('An image');
  await input.press('Enter');
  for (const [who, page] of [['Ann', a.page], ['Ben', b.page]]) {
    const [shown] = await waitForShown(page, `the image loaded at ${who}`,
      (m) => m.type === 'image' && !m.pending && m.images.length === 1 && m.images[0].loaded);
    assert.equal(shown.images[0].alt, 'invoicefdp.png', `${who} sees the name without U+202E`);
  }

  // A voice file: its duration is read through a blob: media element.
  await a.page.locator(tid('file-input')).setInputFiles({ name: 'tone.wav', mimeType: 'audio/wav', buffer: makeWav(1) });
  await waitFor('the duration in the chip', () => a.page.locator(tid('chip-size')).textContent(), (t) => t.endsWith(' · 0:01'));
  await a.page.locator(tid('send-button')).click();
  await waitForShown(b.page, 'the voice message at Ben', (m) => m.type === 'voice' && m.audio === 1);

  // A group through the dialog, its members panel, and a message in it.
  await a.page.locator(tid('new-group-button')).click();
  await a.page.locator(tid('group-name-input')).fill('Policy group');
  await a.page.locator(tid('group-member-search')).fill('ben@ex');
  await a.page.locator(`${tid('group-candidate')}[data-email="ben@example.com"] ${tid('group-candidate-toggle')}`).click();
  await a.page.locator(tid('group-create')).click();
  await waitFor('the group open', () => a.page.locator(tid('conv-name')).textContent(), (t) => t === 'Policy group');
  await a.page.locator(tid('group-info-button')).click();
  await waitFor('two members listed', () => a.page.locator(tid('member')).count(), (n) => n === 2);
  await input.fill('Hello group');
  await input.press('Enter');
  await b.page.locator(`${tid('room-item')}[data-room-type="group"] button`).click();
  await waitForShown(b.page, 'the group message at Ben', (m) => m.text === 'Hello group');

  assert.deepEqual(violations, [], 'no CSP violation while logging in and sending');
  assert.deepEqual(errors, []);

  // The watch itself works: inline style and an image from elsewhere are refused and reported.
  await a.page.evaluate(() => {
    const probe = document.createElement('div');
    probe.setAttribute('style', 'color: red');
    document.body.append(probe);
    const img = document.createElement('img');
    img.src = 'https://elsewhere.invalid/pixel.png';
    document.body.append(img);
  });
  await waitFor('the deliberate violations reported', () => violations.filter((v) => v.includes(' event: ')).length, (n) => n >= 2);
  assert.ok(violations.some((v) => v.includes('"directive":"style-src-attr"') || v.includes('"directive":"style-src"')), violations.join('\n'));
  assert.ok(violations.some((v) => v.includes('"directive":"img-src"')), violations.join('\n'));
  await a.context.close();
  await b.context.close();
});
