// Files over HTTP (SPEC section 11), never as base64 in a WebSocket frame:
// each file becomes a tus upload (POST with Upload-Length), then goes up in
// chunks (PATCH) with XMLHttpRequest, whose progress events are the
// upload's own. A request that fails on the way (network, 409, 5xx) is
// followed by a pause and a HEAD that says where the server stands; the
// upload goes on from there, with a bounded number of attempts. Given up,
// it can be resumed later the same way (the caller keeps the upload).

import { getToken, reportUnauthorized } from './api.js';

const TUS_VERSION = '1.0.0';
/** Bytes per PATCH: small enough to lose little on a cut, large enough to keep requests few. */
export const CHUNK_BYTES = 2 * 1024 * 1024;
/** Pauses before each attempt after a failure; one more failure in a row gives up. */
const BACKOFF_MS = [300, 800, 1600, 3200, 6400];
/** A request that moves no byte either way for this long is taken for a dropped connection. */
const STALL_MS = 30_000;

export class UploadError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.name = 'UploadError';
    this.status = status;
  }
}

function abortError() {
  return new DOMException('The upload was cancelled', 'AbortError');
}

export function isAbort(error) {
  return Boolean(error) && error.name === 'AbortError';
}

/**
 * One HTTP request with XMLHttpRequest (fetch has no upload progress).
 * Answers {status, header(name), json}; rejects with a TypeError when the
 * request did not complete (network, a stall) and with an AbortError when
 * `signal` fired.
 */
function send(method, url, { headers = {}, body = null, signal, onUploadProgress } = {}) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) {
      reject(abortError());
      return;
    }
    const xhr = new XMLHttpRequest();
    const onAbort = () => xhr.abort();
    let stalled = false;
    let watchdog = null;
    const watch = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        stalled = true;
        xhr.abort();
      }, STALL_MS);
    };
    const done = () => {
      clearTimeout(watchdog);
      if (signal) signal.removeEventListener('abort', onAbort);
    };
    xhr.open(method, url);
    const token = getToken();
    if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.setRequestHeader('Tus-Resumable', TUS_VERSION);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => {
      watch();
      if (onUploadProgress) onUploadProgress(event.loaded);
    };
    xhr.onprogress = watch;
    xhr.onload = () => {
      done();
      let json = null;
      try {
        json = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        json = null;
      }
      resolve({ status: xhr.status, header: (name) => xhr.getResponseHeader(name), json });
    };
    xhr.onerror = () => {
      done();
      reject(new TypeError('Network error'));
    };
    xhr.onabort = () => {
      done();
      reject(signal && signal.aborted ? abortError() : new TypeError(stalled ? 'The request stalled' : 'Request aborted'));
    };
    if (signal) signal.addEventListener('abort', onAbort);
    watch();
    xhr.send(body);
  });
}

function wait(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) {
      reject(abortError());
      return;
    }
    const timer = setTimeout(() => {
      if (signal) signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError());
    };
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Worth another attempt: the request may not have arrived, or the upload was busy with an earlier one. */
function retryable(status) {
  return status === 409 || status === 408 || status === 429 || status >= 500;
}

/** The server's refusal as an error naming the file (its details usually do already). */
function refusal(answer, name) {
  if (answer.status === 401) reportUnauthorized();
  const detail = answer.json && typeof answer.json.detail === 'string' ? answer.json.detail : `HTTP ${answer.status}`;
  return new UploadError(detail.includes(name) ? detail : `${name}: ${detail}`, answer.status);
}

function offsetOf(answer) {
  const value = Number(answer.header('Upload-Offset'));
  return Number.isSafeInteger(value) && value >= 0 ? value : null;
}

/**
 * Failures in a row, and the pause before the next attempt; one failure
 * more than there are pauses gives up.
 */
class Attempts {
  constructor(name, signal) {
    this.name = name;
    this.signal = signal;
    this.failures = 0;
  }

  async failed(cause) {
    if (this.failures >= BACKOFF_MS.length) {
      throw new UploadError(`${this.name}: the upload failed (${cause}). Check the connection and retry.`);
    }
    await wait(BACKOFF_MS[this.failures], this.signal);
    this.failures += 1;
  }

  succeeded() {
    this.failures = 0;
  }
}

const locationOf = (upload) => `/api/chat/uploads/${encodeURIComponent(upload.upload_id)}`;

/** POST with Upload-Length and no body: answers {upload, offset}. */
async function create(file, { name, mime, signal }, attempts) {
  for (;;) {
    let answer;
    try {
      answer = await send('POST', '/api/chat/uploads', {
        headers: { 'Content-Type': mime, 'X-File-Name': encodeURIComponent(name), 'Upload-Length': String(file.size) },
        signal,
      });
    } catch (error) {
      if (isAbort(error)) throw error;
      await attempts.failed('the server cannot be reached');
      continue;
    }
    if (answer.status === 201 && answer.json && typeof answer.json.upload_id === 'string') {
      return { upload: answer.json, offset: offsetOf(answer) || 0 };
    }
    if (!retryable(answer.status)) throw refusal(answer, name);
    await attempts.failed(`HTTP ${answer.status}`);
  }
}

/** HEAD: how much of the upload the server has, or null when it has none of it any more. */
async function serverOffset(upload, { name, signal }, attempts) {
  for (;;) {
    let answer;
    try {
      answer = await send('HEAD', locationOf(upload), { signal });
    } catch (error) {
      if (isAbort(error)) throw error;
      await attempts.failed('the server cannot be reached');
      continue;
    }
    const offset = answer.status === 200 ? offsetOf(answer) : null;
    if (offset !== null) return offset;
    // 404: it failed its checks or expired.
    if (answer.status === 404) return null;
    if (!retryable(answer.status)) throw refusal(answer, name);
    await attempts.failed(`HTTP ${answer.status}`);
  }
}

/**
 * Upload one file; answers the server's description of it
 * ({upload_id, file_name, file_size, mime_type, expires_at}).
 * `onProgress(bytes)` reports how much of it the server has (or is taking
 * now); `signal` cancels. `onCreated(upload)` hands over the upload as soon
 * as it exists: given back as `resume`, a later call goes on with it
 * instead of starting again.
 */
export async function uploadFile(file, { name, mime, signal, resume = null, onCreated = () => {}, onProgress = () => {} }) {
  const options = { name, mime, signal };
  const attempts = new Attempts(name, signal);
  let upload = null;
  let offset = 0;
  if (resume) {
    offset = await serverOffset(resume, options, attempts);
    if (offset !== null) upload = resume;
  }
  if (!upload) {
    ({ upload, offset } = await create(file, options, attempts));
    onCreated(upload);
  }
  onProgress(offset);
  attempts.succeeded();

  while (offset < file.size) {
    const from = offset;
    const end = Math.min(file.size, from + CHUNK_BYTES);
    let answer = null;
    try {
      answer = await send('PATCH', locationOf(upload), {
        headers: { 'Content-Type': 'application/offset+octet-stream', 'Upload-Offset': String(from) },
        body: file.slice(from, end),
        signal,
        onUploadProgress: (loaded) => onProgress(Math.min(end, from + loaded)),
      });
    } catch (error) {
      if (isAbort(error)) throw error;
    }
    if (answer && answer.status === 204) {
      const next = offsetOf(answer);
      offset = next === null ? end : next;
      attempts.succeeded();
      onProgress(offset);
      continue;
    }
    if (answer && !retryable(answer.status)) throw refusal(answer, name);
    // The request may have been cut halfway: the server keeps what arrived, HEAD says how much.
    onProgress(from);
    await attempts.failed(answer ? `HTTP ${answer.status}` : 'the connection dropped');
    const known = await serverOffset(upload, options, attempts);
    if (known === null) throw new UploadError(`${name}: the upload is no longer on the server. Retry to send it again.`, 404);
    // Bytes that arrived count as progress: the attempts start afresh.
    if (known > from) attempts.succeeded();
    offset = known;
    onProgress(offset);
  }
  return upload;
}
