// Helpers for the browser tests: start the real chatd on a free port with a
// temporary data and static directory, launch Debian's Chromium, poll with
// bounded waits, and make small valid media files.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
export const artifactsDir = path.join(here, 'artifacts');

// ------------------------------------------------------------------ server

async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

function copyDir(from, to) {
  fs.mkdirSync(to, { recursive: true });
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    if (entry.name === 'chat_files') continue; // uploads of a developer's own runs
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isDirectory()) copyDir(source, target);
    else if (entry.isFile()) fs.copyFileSync(source, target);
  }
}

/**
 * Start `$CHATD_BIN serve` on 127.0.0.1:<free port> and wait (10 s at most)
 * for GET /healthz → 200. Answers {baseUrl, port, tmp, stop({keep}), logs()}.
 * `port` and `tmp` (from an earlier server's answer) restart a stopped
 * server on the same address and data.
 */
export async function startServer({ env = {}, port: wantedPort, tmp: reuse } = {}) {
  const bin = path.resolve(here, process.env.CHATD_BIN || '../../target/release/chatd');
  if (!fs.existsSync(bin)) {
    throw new Error(`chatd binary not found at ${bin}: build it first (cargo build --release) or set CHATD_BIN`);
  }
  const tmp = reuse || fs.mkdtempSync(path.join(os.tmpdir(), 'chatd-e2e-'));
  const dataDir = path.join(tmp, 'data');
  const staticDir = path.join(tmp, 'static');
  if (!reuse) {
    fs.mkdirSync(dataDir);
    copyDir(path.join(repoRoot, 'static'), staticDir);
  }

  const port = wantedPort || (await freePort());
  const addr = `127.0.0.1:${port}`;
  const child = spawn(bin, ['serve', '--addr', addr, '--data-dir', dataDir, '--static-dir', staticDir], {
    env: {
      ...process.env,
      RUST_LOG: process.env.RUST_LOG || 'info',
      BASE_URL: `http://${addr}`,
      // The limits stay on, but every test registers and logs in from
      // 127.0.0.1: per-address login and registration allowances would
      // refuse the suite, not a person.
      CHAT_REGISTRATIONS_PER_IP_PER_HOUR: '100000',
      CHAT_LOGINS_PER_IP_PER_MIN: '100000',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (chunk) => {
    output += chunk.toString();
    if (output.length > 200_000) output = output.slice(-100_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  // Never leave the server behind, whatever happens to this process.
  const killOnExit = () => {
    if (exited === null) child.kill('SIGKILL');
  };
  process.on('exit', killOnExit);

  /** SIGTERM (SIGKILL after 5 s); the files go too unless `keep`. Answers how chatd exited. */
  const stop = async ({ keep = false } = {}) => {
    process.off('exit', killOnExit);
    if (exited === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      if (exited === null) await once(child, 'exit');
      clearTimeout(timer);
    }
    if (!keep) fs.rmSync(tmp, { recursive: true, force: true });
    return exited;
  };

  const baseUrl = `http://${addr}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exited !== null) {
      await stop();
      throw new Error(`chatd exited early (${JSON.stringify(exited)}):\n${output}`);
    }
    try {
      const response = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (response.status === 200) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`chatd did not answer GET /healthz with 200 within 10 s:\n${output}`);
    }
    await sleep(100);
  }
  return { baseUrl, port, tmp, stop, logs: () => output };
}

// ----------------------------------------------------------------- browser

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // A fake microphone (a beep) so that voice recording can be tested.
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
];

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
}

/**
 * A page that records console errors and uncaught exceptions in `errors`
 * (each as "<label>: <text>") for the test to assert on.
 */
export async function newWatchedPage(context, label, errors) {
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`${label} console: ${message.text()}`);
  });
  page.on('pageerror', (error) => errors.push(`${label} pageerror: ${error.message}`));
  return page;
}

// ------------------------------------------------------------------ waits

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Poll `probe` until `check(value)` holds (default: truthy), 10 s at most.
 * Answers the last value; throws with `what` and the last value on timeout.
 */
export async function waitFor(what, probe, check = Boolean, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  let last;
  let lastError;
  for (;;) {
    try {
      last = await probe();
      lastError = undefined;
      if (check(last)) return last;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const detail = lastError ? `error: ${lastError.message}` : `last value: ${JSON.stringify(last)}`;
      throw new Error(`timed out after ${timeout} ms waiting for ${what} (${detail})`);
    }
    await sleep(50);
  }
}

// ------------------------------------------------------------ media files

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(buffer) {
  let crc = 0xffffffff;
  for (const byte of buffer) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function pngChunk(type, data) {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/** A valid RGB PNG with a diagonal gradient. */
export function makePng(width = 96, height = 64) {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // RGB
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y += 1) {
    const row = y * (width * 3 + 1);
    raw[row] = 0; // filter: none
    for (let x = 0; x < width; x += 1) {
      raw[row + 1 + x * 3] = Math.round((x / width) * 255);
      raw[row + 2 + x * 3] = Math.round((y / height) * 255);
      raw[row + 3 + x * 3] = 200;
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', header),
    pngChunk('IDAT', zlib.deflateSync(raw)),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A 16-bit mono PCM WAV of a sine tone. */
export function makeWav(seconds = 1.5, rate = 8000, frequency = 440) {
  const samples = Math.round(seconds * rate);
  const buffer = Buffer.alloc(44 + samples * 2);
  buffer.write('RIFF', 0, 'ascii');
  buffer.writeUInt32LE(36 + samples * 2, 4);
  buffer.write('WAVE', 8, 'ascii');
  buffer.write('fmt ', 12, 'ascii');
  buffer.writeUInt32LE(16, 16);
  buffer.writeUInt16LE(1, 20);
  buffer.writeUInt16LE(1, 22);
  buffer.writeUInt32LE(rate, 24);
  buffer.writeUInt32LE(rate * 2, 28);
  buffer.writeUInt16LE(2, 32);
  buffer.writeUInt16LE(16, 34);
  buffer.write('data', 36, 'ascii');
  buffer.writeUInt32LE(samples * 2, 40);
  for (let i = 0; i < samples; i += 1) {
    buffer.writeInt16LE(Math.round(Math.sin((2 * Math.PI * frequency * i) / rate) * 12000), 44 + i * 2);
  }
  return buffer;
}
