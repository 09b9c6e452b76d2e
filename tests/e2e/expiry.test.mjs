// An expired token ends the session: the server closes the WebSocket with
// 1008 (or answers 401) and the client goes back to the login screen.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { launchBrowser, newWatchedPage, startServer, waitFor } from './support.mjs';

const tid = (id) => `[data-testid="${id}"]`;
const TTL_SECS = 3;

let server;
let browser;

before(async () => {
  server = await startServer({ env: { CHAT_TOKEN_TTL_SECS: String(TTL_SECS) } });
  browser = await launchBrowser();
});

after(async () => {
  try {
    if (browser) await browser.close();
  } finally {
    if (server) await server.stop();
  }
});

test('an expired token brings the login screen back', { timeout: 30_000 }, async () => {
  const errors = [];
  const context = await browser.newContext();
  const page = await newWatchedPage(context, 'expiry', errors);
  await page.goto(server.baseUrl);
  await page.locator(tid('show-register')).click();
  await page.locator(tid('register-name')).fill('Short Lived');
  await page.locator(tid('register-email')).fill('short@example.com');
  await page.locator(tid('register-password')).fill('password123');
  await page.locator(tid('register-submit')).click();
  await waitFor('signed in', () => page.locator(tid('me-name')).textContent(), (t) => t === 'Short Lived');
  await waitFor('connected', () => page.locator(tid('conn-status')).getAttribute('data-state'), (s) => s === 'open');

  await page.locator(tid('login-form')).waitFor({ timeout: (TTL_SECS + 10) * 1000 });
  assert.match(await page.locator(tid('auth-error')).textContent(), /session has expired/i);
  assert.equal(await page.evaluate(() => localStorage.getItem('chatd.token')), null);

  // Logging in again works and gives a fresh session.
  await page.locator(tid('login-email')).fill('short@example.com');
  await page.locator(tid('login-password')).fill('password123');
  await page.locator(tid('login-submit')).click();
  await waitFor('signed in again', () => page.locator(tid('me-name')).textContent(), (t) => t === 'Short Lived');
  await context.close();
  assert.deepEqual(errors, []);
});
