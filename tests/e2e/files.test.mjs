// Files in the web client (SPEC section 11): every file goes up as a tus
// upload over HTTP (the WebSocket frame only names it), with its progress
// shown; a PATCH that fails is resumed from the server's offset to the exact
// bytes, and one given up after bounded attempts goes on with Retry; the
// other side sees the thumbnail and opens the full image; a share link
// opens without a token; an upload can be cancelled. Ann sends, Ben
// receives, in two browser contexts against the real chatd. Steps run in
// order and share the browser; a step after a failed one is skipped.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { artifactsDir, launchBrowser, makePng, makeWav, newWatchedPage, startServer, waitFor } from './support.mjs';

const tid = (id) => `[data-testid="${id}"]`;
const PASSWORD = 'password123';
const PEOPLE = {
  ann: { name: 'Ann Uploader', email: 'ann@example.com' },
  ben: { name: 'Ben Viewer', email: 'ben@example.com' },
};
const MB = 1024 * 1024;

let server;
let browser;
/** label → {session, context, page} */
const who = {};
const errors = [];
const violations = [];
/** Ann's WebSocket frames and upload requests, as they leave the page. */
const framesSent = [];
const uploadRequests = [];
let failed = false;
let roomId = null;

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
          await person.page.screenshot({ path: path.join(artifactsDir, `files-failure-${label}.png`), timeout: 5000 });
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
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : null };
}

/** GET a URL the server handed out, with no token at all. */
async function download(url) {
  const response = await fetch(url);
  return { status: response.status, type: response.headers.get('content-type'), bytes: Buffer.from(await response.arrayBuffer()) };
}

const page = (label) => who[label].page;

async function openAs(label) {
  const person = who[label];
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  await context.addInitScript((value) => localStorage.setItem('chatd.token', value), person.session.access_token);
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
  return p;
}

async function signIn(label) {
  const p = page(label);
  await p.goto(server.baseUrl);
  await waitFor(`${label} signed in`, () => p.locator(tid('me-name')).textContent(), (t) => t === PEOPLE[label].name);
  await waitFor(`${label} connected`, () => p.locator(tid('conn-status')).getAttribute('data-state'), (s) => s === 'open', 15_000);
  await p.locator(`${tid('room-item')}[data-room-id="${roomId}"] button`).click();
  await p.locator(tid('composer-input')).waitFor();
}

function messages(p) {
  return p.$$eval('[data-testid="message"]', (nodes) => nodes.map((node) => ({
    id: node.dataset.id ? Number(node.dataset.id) : null,
    pending: node.dataset.pending === 'true',
    type: node.dataset.type,
    text: node.querySelector('[data-testid="message-content"]')?.textContent ?? null,
    images: Array.from(node.querySelectorAll('img[data-testid="message-image"]')).map((img) => ({
      src: img.src,
      loaded: img.complete && img.naturalWidth > 0,
      width: img.naturalWidth,
    })),
    files: Array.from(node.querySelectorAll('[data-testid="message-file"]')).map((a) => ({ text: a.textContent, href: a.href })),
    audio: Array.from(node.querySelectorAll('audio[data-testid="message-audio"]')).map((a) => a.src),
  })));
}

async function waitForMessage(p, what, predicate, timeout) {
  const [found] = await waitFor(what, async () => (await messages(p)).filter(predicate), (list) => list.length > 0, timeout);
  return found;
}

function messageWithText(p, text) {
  return p.locator(tid('message'), { has: p.locator(tid('message-content'), { hasText: text }) }).first();
}

/** The send_message frames Ann's page sent, parsed. */
function sentMessages() {
  return framesSent.map((payload) => {
    try {
      return JSON.parse(payload);
    } catch {
      return null;
    }
  }).filter((frame) => frame && frame.type === 'send_message');
}

/** `n` bytes of every value, in an order that shows any byte lost, doubled or moved. */
function noise(n, seed) {
  const out = Buffer.alloc(n);
  let block = crypto.createHash('sha256').update(seed).digest();
  for (let at = 0; at < n; at += block.length) {
    block.copy(out, at, 0, Math.min(block.length, n - at));
    block = crypto.createHash('sha256').update(block).digest();
  }
  return out;
}

/** A PDF as far as the server's checks go: the header, then anything. */
function makePdf(size, seed) {
  const head = Buffer.from('%PDF-1.4\n');
  return Buffer.concat([head, noise(size - head.length, seed)]);
}

/** Plain text of `size` bytes (the server wants UTF-8 without NUL). */
function makeText(size) {
  const line = 'The quick brown fox jumps over the lazy dog, 0123456789.\n';
  return Buffer.from(line.repeat(Math.ceil(size / line.length)).slice(0, size));
}

describe('files: uploads, thumbnails, resume, share links', () => {
  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
    for (const [label, person] of Object.entries(PEOPLE)) {
      const answer = await rest('POST', '/api/auth/register', { ...person, password: PASSWORD });
      assert.equal(answer.status, 201, JSON.stringify(answer.body));
      who[label] = { session: answer.body };
    }
    const room = await rest('POST', '/api/chat/rooms', { receiver_id: who.ben.session.user.id }, who.ann.session.access_token);
    roomId = room.body.id;
    const ann = await openAs('ann');
    ann.on('websocket', (ws) => ws.on('framesent', (frame) => framesSent.push(String(frame.payload))));
    ann.on('request', (request) => {
      if (request.url().includes('/api/chat/uploads')) {
        uploadRequests.push({ method: request.method(), url: request.url(), headers: request.headers(), at: Date.now() });
      }
    });
    await openAs('ben');
    await signIn('ann');
    await signIn('ben');
  });

  after(async () => {
    try {
      if (browser) await browser.close();
    } finally {
      if (server) await server.stop();
    }
  });

  step('an image goes up as an upload; Ben sees its thumbnail and opens the full image', async () => {
    const ann = page('ann');
    const ben = page('ben');
    const png = makePng(800, 500);
    await ann.locator(tid('file-input')).setInputFiles({ name: 'Wide view.png', mimeType: 'image/png', buffer: png });
    await ann.locator(tid('attachment-chip')).waitFor();
    await ann.locator(tid('composer-input')).fill('A wide view');
    await ann.locator(tid('composer-input')).press('Enter');
    const mine = await waitForMessage(ann, 'the image confirmed at Ann', (m) => m.text === 'A wide view' && !m.pending && m.images.length === 1);

    // Over HTTP: created with Upload-Length, the bytes in PATCHes.
    const create = uploadRequests.find((r) => r.method === 'POST');
    assert.ok(create, 'a POST /api/chat/uploads');
    assert.equal(create.headers['upload-length'], String(png.length));
    assert.equal(create.headers['x-file-name'], 'Wide%20view.png');
    assert.equal(create.headers['content-type'], 'image/png');
    assert.ok(uploadRequests.some((r) => r.method === 'PATCH'), 'the bytes went in a PATCH');
    // The frame only names the upload: no base64, nothing large.
    const [frame] = sentMessages().filter((f) => f.data.content === 'A wide view');
    assert.equal(frame.data.message_type, 'image');
    assert.equal(frame.data.files_data.length, 1);
    assert.deepEqual(Object.keys(frame.data.files_data[0]), ['upload_id']);
    assert.equal(typeof frame.data.files_data[0].upload_id, 'string');
    assert.ok(framesSent.every((f) => f.length < 2048 && !f.includes('file_data')), 'no frame carries file bytes');
    assert.ok(mine.images[0].src.includes('/static/chat_files/'), mine.images[0].src);

    // The thumbnail replaces the image when its message_update arrives.
    const [shown] = await waitFor('the thumbnail at Ben', async () => (await messages(ben)).filter((m) => m.text === 'A wide view'),
      (list) => list.length === 1 && list[0].images.length === 1 && list[0].images[0].src.includes('/chat_files/thumbnails/') && list[0].images[0].loaded);
    assert.equal(shown.images[0].width, 320, 'the thumbnail is 320 px wide');
    assert.match(shown.images[0].src, /\?exp=\d+&sig=/, 'signed like the file');
    await waitFor('the thumbnail at Ann too', async () => (await messages(ann)).find((m) => m.text === 'A wide view').images[0].src,
      (src) => src.includes('/chat_files/thumbnails/'));

    // A click opens the full image in a dialog; Escape closes it and focus goes back.
    const opener = messageWithText(ben, 'A wide view').locator(tid('image-open'));
    await opener.click();
    const lightbox = ben.locator(tid('lightbox'));
    await waitFor('the lightbox open', () => lightbox.isVisible(), Boolean);
    assert.equal(await lightbox.getAttribute('aria-label'), 'Wide view.png');
    assert.equal(await ben.locator(tid('lightbox-name')).textContent(), 'Wide view.png');
    const full = await waitFor('the full image loaded', () => ben.locator(tid('lightbox-image')).evaluate((img) => ({
      src: img.src, width: img.complete ? img.naturalWidth : 0,
    })), (img) => img.width > 0);
    assert.equal(full.width, 800, 'the full image, not the thumbnail');
    assert.match(full.src, /\/static\/chat_files\/images\/[^?]+\.png\?exp=\d+&sig=/);
    assert.equal(await ben.locator(tid('lightbox-original')).getAttribute('href'), full.src);
    await ben.screenshot({ path: path.join(artifactsDir, 'files-lightbox.png') });
    await ben.keyboard.press('Escape');
    await waitFor('the lightbox closed', () => lightbox.isVisible(), (v) => v === false);
    assert.equal(await ben.evaluate(() => document.activeElement?.dataset.testid), 'image-open', 'focus back on the image');
    assert.equal(await ben.locator(tid('conv-name')).textContent(), PEOPLE.ann.name, 'Escape closed only the image');
  });

  step('a voice file goes up as an upload and its frame carries the duration', async () => {
    const ann = page('ann');
    await ann.locator(tid('file-input')).setInputFiles({ name: 'hello.wav', mimeType: 'audio/wav', buffer: makeWav(1.2) });
    await waitFor('the duration in the chip', () => ann.locator(tid('chip-size')).textContent(), (t) => t.endsWith(' · 0:01'));
    await ann.locator(tid('send-button')).click();
    await waitForMessage(page('ben'), 'the voice message at Ben', (m) => m.type === 'voice' && m.audio.length === 1);
    const [frame] = sentMessages().filter((f) => f.data.message_type === 'voice');
    assert.deepEqual(Object.keys(frame.data.files_data[0]).sort(), ['duration', 'upload_id']);
    assert.ok(Math.abs(frame.data.files_data[0].duration - 1.2) < 0.05, JSON.stringify(frame.data.files_data));
  });

  step('a larger file shows its upload progress, per file and in the composer', async () => {
    const ann = page('ann');
    const text = makeText(6 * MB + 12_345);
    await ann.evaluate(() => {
      // Every value each progress bar takes, and whether the composer's line showed.
      window.__uploadSteps = [];
      window.__composerProgress = [];
      new MutationObserver((records) => {
        for (const record of records) {
          const node = record.target;
          if (node.matches && node.matches('progress[data-testid="upload-progress"]') && node.hasAttribute('value')) {
            window.__uploadSteps.push(Number(node.getAttribute('value')) / Number(node.getAttribute('max')));
          }
        }
      }).observe(document.getElementById('message-list'), { subtree: true, attributes: true, attributeFilter: ['value'] });
      const line = document.querySelector('[data-testid="send-progress"]');
      new MutationObserver(() => {
        if (!line.hidden) window.__composerProgress.push(line.querySelector('.send-progress-label').textContent);
      }).observe(line, { subtree: true, attributes: true, childList: true, characterData: true });
    });
    await ann.locator(tid('file-input')).setInputFiles({ name: 'long notes.txt', mimeType: 'text/plain', buffer: text });
    await ann.locator(tid('send-button')).click();
    const pending = await waitForMessage(ann, 'the pending file message', (m) => m.pending && m.type === 'file');
    assert.equal(pending.id, null);
    const [received] = await waitFor('the file at Ben', async () => (await messages(page('ben'))).filter((m) => m.files.some((f) => f.text.includes('long notes.txt'))),
      (list) => list.length === 1, 20_000);
    assert.match(received.files[0].text, /6\.0 MB/);
    const steps = await ann.evaluate(() => window.__uploadSteps);
    const between = steps.filter((v) => v > 0 && v < 1);
    assert.ok(new Set(between).size >= 2, `the bar moved through the upload: ${JSON.stringify(steps)}`);
    assert.deepEqual([...between].sort((a, b) => a - b), between, 'and only forward');
    const labels = await ann.evaluate(() => window.__composerProgress);
    assert.ok(labels.some((l) => /^Uploading… ([1-9]|[1-9]\d)%$/.test(l)), `the composer's line counted up: ${JSON.stringify(labels.slice(0, 20))}`);
    await waitFor('the progress line gone', () => ann.locator(tid('send-progress')).isVisible(), (v) => v === false);
    const { bytes } = await download(received.files[0].href);
    assert.ok(bytes.equals(text), 'Ben downloads the exact text');
  });

  step('a PATCH that fails is resumed from the server\'s offset, to the exact bytes', async () => {
    const ann = page('ann');
    const pdf = makePdf(5 * MB + 777, 'resume');
    // The first PATCH never reaches the server; the second does, but its
    // answer is lost on the way back, so only HEAD can tell where to go on.
    let patches = 0;
    const served = [];
    await ann.route('**/api/chat/uploads/*', async (route) => {
      const request = route.request();
      if (request.method() !== 'PATCH') {
        await route.continue();
        return;
      }
      patches += 1;
      const offset = Number(request.headers()['upload-offset']);
      if (patches === 1) {
        served.push({ offset, outcome: 'cut before the server' });
        await route.abort('connectionreset');
      } else if (patches === 2) {
        const response = await route.fetch();
        served.push({ offset, outcome: `reached the server (${response.status()}), answer lost` });
        await route.abort('connectionreset');
      } else {
        served.push({ offset, outcome: 'through' });
        await route.continue();
      }
    });
    const before = uploadRequests.length;
    await ann.locator(tid('file-input')).setInputFiles({ name: 'report.pdf', mimeType: 'application/pdf', buffer: pdf });
    await ann.locator(tid('send-button')).click();
    const [received] = await waitFor('the PDF at Ben', async () => (await messages(page('ben'))).filter((m) => m.files.some((f) => f.text.includes('report.pdf'))),
      (list) => list.length === 1, 30_000);
    await ann.unroute('**/api/chat/uploads/*');
    const mine = uploadRequests.slice(before);
    assert.equal(mine.filter((r) => r.method === 'POST').length, 1, 'one upload, resumed rather than started again');
    assert.ok(mine.filter((r) => r.method === 'HEAD').length >= 2, `asked for the offset after each failure: ${JSON.stringify(mine.map((r) => r.method))}`);
    assert.equal(served[0].offset, 0);
    assert.equal(served[1].offset, 0, 'the cut chunk is sent again from the offset HEAD gave');
    assert.ok(served[2].offset > 0, `then on from what the server had: ${JSON.stringify(served)}`);
    assert.ok(served.slice(2).every((s, i, all) => i === 0 || s.offset > all[i - 1].offset), JSON.stringify(served));
    const { status, bytes } = await download(received.files[0].href);
    assert.equal(status, 200);
    assert.equal(bytes.length, pdf.length);
    assert.ok(bytes.equals(pdf), 'Ben downloads the exact bytes');
    assert.equal((await messages(ann)).filter((m) => m.pending).length, 0);
    // What the browser logged about the two requests cut on purpose.
    for (let i = errors.length - 1; i >= 0; i -= 1) {
      if (/^ann console: Failed to load resource: net::ERR_CONNECTION_RESET$/.test(errors[i])) errors.splice(i, 1);
    }
  });

  step('a connection that stays away fails the upload after bounded attempts; Retry goes on with it', async () => {
    const ann = page('ann');
    const zip = Buffer.concat([Buffer.from('PK\x03\x04'), noise(4 * MB + 4321, 'retry')]);
    // The first PATCH goes through; then nothing reaches the server any more.
    let patches = 0;
    await ann.route('**/api/chat/uploads/*', async (route) => {
      const method = route.request().method();
      if (method === 'PATCH' && (patches += 1) === 1) await route.continue();
      else await route.abort('internetdisconnected');
    });
    const before = uploadRequests.length;
    const startedAt = Date.now();
    await ann.locator(tid('file-input')).setInputFiles({ name: 'bundle.zip', mimeType: 'application/zip', buffer: zip });
    await ann.locator(tid('composer-input')).fill('the bundle');
    await ann.locator(tid('send-button')).click();
    const failedShown = await waitFor('the upload given up', () => ann.locator(tid('pending-error')).textContent(), (t) => t.includes('bundle.zip'), 30_000);
    const gaveUpAfter = Date.now() - startedAt;
    assert.match(failedShown, /upload failed/);
    assert.match(await ann.locator(tid('composer-error')).textContent(), /bundle\.zip/);
    const given = uploadRequests.slice(before);
    const heads = given.filter((r) => r.method === 'HEAD').length;
    assert.ok(heads >= 3 && heads <= 6, `a few attempts, not endless ones: ${JSON.stringify(given.map((r) => r.method))}`);
    assert.ok(gaveUpAfter > 5000, `with pauses that grow (gave up after ${gaveUpAfter} ms)`);
    assert.equal(sentMessages().filter((f) => f.data.content === 'the bundle').length, 0, 'nothing sent');

    // Back online: Retry resumes the same upload from what the server has.
    await ann.unroute('**/api/chat/uploads/*');
    const retryFrom = uploadRequests.length;
    await ann.locator(tid('retry-button')).click();
    const [received] = await waitFor('the bundle at Ben', async () => (await messages(page('ben'))).filter((m) => m.text === 'the bundle'),
      (list) => list.length === 1, 20_000);
    const resumed = uploadRequests.slice(retryFrom);
    assert.deepEqual(resumed.map((r) => r.method).slice(0, 2), ['HEAD', 'PATCH'], 'no new upload: HEAD, then on');
    assert.equal(resumed.filter((r) => r.method === 'POST').length, 0);
    assert.equal(resumed[1].headers['upload-offset'], String(2 * MB), 'from the first chunk on');
    const { bytes } = await download(received.files[0].href);
    assert.ok(bytes.equals(zip), 'Ben downloads the exact bytes');
    for (let i = errors.length - 1; i >= 0; i -= 1) {
      if (/^ann console: Failed to load resource: net::ERR_INTERNET_DISCONNECTED$/.test(errors[i])) errors.splice(i, 1);
    }
  });

  step('a share link opens the file without a token', async () => {
    const ben = page('ben');
    const pdfMessage = ben.locator(tid('message'), { has: ben.locator(tid('message-file'), { hasText: 'report.pdf' }) });
    await pdfMessage.hover();
    await pdfMessage.locator(tid('share-file')).click();
    const dialog = ben.locator(tid('share-dialog'));
    await waitFor('the share dialog', () => dialog.isVisible(), Boolean);
    assert.equal(await ben.locator(tid('share-name')).textContent(), 'report.pdf');
    const url = await waitFor('the link', () => ben.locator(tid('share-url')).inputValue(), (v) => v.startsWith('http'));
    assert.match(url, /\/static\/chat_files\/files\/[^?]+report\.pdf\?exp=\d+&sig=/);
    const expiresAt = Date.parse(await ben.locator(tid('share-url')).getAttribute('data-expires-at'));
    const day = Date.now() + 86_400_000;
    assert.ok(Math.abs(expiresAt - day) < 120_000, `valid a day by default (${new Date(expiresAt).toISOString()})`);
    assert.match(await ben.locator(tid('share-status')).textContent(), /Anyone with this link/);
    const shared = await download(url);
    assert.equal(shared.status, 200, 'opens with no token');
    assert.ok(shared.bytes.equals(makePdf(5 * MB + 777, 'resume')));
    const unsigned = await download(url.split('?')[0]);
    assert.equal(unsigned.status, 404, 'without its signature the path opens nothing');

    // A week instead: a new link.
    await ben.locator(tid('share-ttl')).selectOption('604800');
    const weekUrl = await waitFor('the week-long link', () => ben.locator(tid('share-url')).inputValue(), (v) => v.startsWith('http') && v !== url);
    const weekExpiry = Date.parse(await ben.locator(tid('share-url')).getAttribute('data-expires-at'));
    assert.ok(Math.abs(weekExpiry - (Date.now() + 7 * 86_400_000)) < 120_000);
    assert.equal((await download(weekUrl)).status, 200);
    await ben.keyboard.press('Escape');
    await waitFor('the share dialog closed', () => dialog.isVisible(), (v) => v === false);

    // From the full image too.
    await messageWithText(ben, 'A wide view').locator(tid('image-open')).click();
    await ben.locator(tid('lightbox-share')).click();
    const imageUrl = await waitFor('the image link', () => ben.locator(tid('share-url')).inputValue(), (v) => v.startsWith('http'));
    assert.match(imageUrl, /\/static\/chat_files\/images\/[^?]+\.png\?exp=\d+&sig=/);
    const image = await download(imageUrl);
    assert.equal(image.status, 200);
    assert.equal(image.type, 'image/png');
    await ben.locator(tid('share-close')).click();
    await waitFor('the share dialog closed', () => dialog.isVisible(), (v) => v === false);
    assert.equal(await ben.locator(tid('lightbox')).isVisible(), true, 'the image stays open under it');
    await ben.locator(tid('lightbox-close')).click();
    await waitFor('the lightbox closed', () => ben.locator(tid('lightbox')).isVisible(), (v) => v === false);
  });

  step('an upload can be cancelled before the message is sent', async () => {
    const ann = page('ann');
    // Slow the PATCHes down so that there is time to cancel.
    let released = 0;
    await ann.route('**/api/chat/uploads/*', async (route) => {
      if (route.request().method() === 'PATCH') await new Promise((resolve) => setTimeout(resolve, 400));
      try {
        await route.continue();
        released += 1;
      } catch {
        // The request was cancelled while it waited.
      }
    });
    const before = uploadRequests.length;
    await ann.locator(tid('file-input')).setInputFiles({ name: 'never.txt', mimeType: 'text/plain', buffer: makeText(8 * MB) });
    await ann.locator(tid('send-button')).click();
    const cancel = ann.locator(tid('cancel-upload'));
    await waitFor('a PATCH under way', () => uploadRequests.slice(before).filter((r) => r.method === 'PATCH').length, (n) => n >= 1);
    await cancel.click();
    const cancelledAt = Date.now();
    await waitFor('the pending message gone', async () => (await messages(ann)).filter((m) => m.pending).length, (n) => n === 0);
    await waitFor('the progress line gone', () => ann.locator(tid('send-progress')).isVisible(), (v) => v === false);
    // Long enough for the next chunk to have started, were it still going.
    await new Promise((resolve) => setTimeout(resolve, 1200));
    const late = uploadRequests.slice(before).filter((r) => r.at > cancelledAt + 50);
    assert.deepEqual(late.map((r) => r.method), [], 'nothing sent after the cancel');
    assert.equal(sentMessages().filter((f) => JSON.stringify(f).includes('never.txt')).length, 0);
    assert.equal((await messages(page('ben'))).filter((m) => m.files.some((f) => f.text.includes('never.txt'))).length, 0);
    await ann.unroute('**/api/chat/uploads/*');
    assert.ok(released <= 2, `at most the chunk under way went through (${released})`);
  });

  test('no CSP violation, console error or uncaught exception', () => {
    assert.deepEqual(violations, []);
    assert.deepEqual(errors, []);
  });
});
