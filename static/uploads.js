// Files over HTTP (SPEC section 11), never as base64 in a WebSocket frame:
// each file becomes a tus upload (POST with Upload-Length), then goes up in
// chunks (PATCH) with XMLHttpRequest, whose progress events are the
// upload's own. A request that fails on the way (network, 409, 5xx) is
// followed by a pause and a HEAD that says where the server stands; the
// upload goes on from there, with a bounded number of attempts.

import { getToken, reportUnauthorized } from './api.js';

const TUS_VERSION = '1.0.0';
/** Bytes per PATCH: small enough to lose little on a cut, large enough to keep requests few. */
export const CHUNK_BYTES = 2 * 1024 * 1024;
/** Pauses before each attempt after a failure; one more failure in a row gives up. */
const BACKOFF_MS = [300, 800, 1600, 3200, 6400];

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
 * request did not complete (network, timeout) and with an AbortError when
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
    const done = () => {
      if (signal) signal.removeEventListener('abort', onAbort);
    };
    xhr.open(method, url);
    const token = getToken();
    if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.setRequestHeader('Tus-Resumable', TUS_VERSION);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    if (onUploadProgress) xhr.upload.onprogress = (event) => onUploadProgress(event.loaded);
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
    xhr.ontimeout = xhr.onerror;
    xhr.onabort = () => {
      done();
      reject(signal && signal.aborted ? abortError() : new TypeError('Request aborted'));
    };
    if (signal) signal.addEventListener('abort', onAbort);
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
 * Upload one file; answers the server's description of it
 * ({upload_id, file_name, file_size, mime_type, expires_at}).
 * `onProgress(bytes)` reports how much of it the server has (or is taking
 * now); `signal` cancels.
 */
export async function uploadFile(file, { name, mime, onProgress = () => {}, signal } = {}) {
  let failures = 0;
  /** After a failure: pause, or give up when there were too many in a row. */
  const pauseAfterFailure = async (cause) => {
    if (failures >= BACKOFF_MS.length) {
      throw new UploadError(`${name}: the upload failed (${cause}). Check the connection and retry.`);
    }
    await wait(BACKOFF_MS[failures], signal);
    failures += 1;
  };

  let created = null;
  while (!created) {
    let answer;
    try {
      answer = await send('POST', '/api/chat/uploads', {
        headers: { 'Content-Type': mime, 'X-File-Name': encodeURIComponent(name), 'Upload-Length': String(file.size) },
        signal,
      });
    } catch (error) {
      if (isAbort(error)) throw error;
      await pauseAfterFailure('the server cannot be reached');
      continue;
    }
    if (answer.status === 201 && answer.json && answer.json.upload_id) {
      created = answer;
    } else if (retryable(answer.status)) {
      await pauseAfterFailure(`HTTP ${answer.status}`);
    } else {
      throw refusal(answer, name);
    }
  }
  const upload = created.json;
  const location = `/api/chat/uploads/${encodeURIComponent(upload.upload_id)}`;
  let offset = offsetOf(created) || 0;
  onProgress(offset);
  failures = 0;

  while (offset < file.size) {
    const end = Math.min(file.size, offset + CHUNK_BYTES);
    const from = offset;
    let answer = null;
    let cause = 'the connection dropped';
    try {
      answer = await send('PATCH', location, {
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
      failures = 0;
      onProgress(offset);
      continue;
    }
    if (answer && !retryable(answer.status)) throw refusal(answer, name);
    if (answer) cause = `HTTP ${answer.status}`;
    // Where the server stands: a request cut halfway leaves what arrived.
    onProgress(from);
    for (;;) {
      await pauseAfterFailure(cause);
      let head;
      try {
        head = await send('HEAD', location, { signal });
      } catch (error) {
        if (isAbort(error)) throw error;
        cause = 'the server cannot be reached';
        continue;
      }
      const known = head.status === 200 ? offsetOf(head) : null;
      if (known !== null) {
        // Bytes that arrived count as progress: the attempts start afresh.
        if (known > from) failures = 0;
        offset = known;
        onProgress(offset);
        break;
      }
      if (head.status === 404) {
        throw new UploadError(`${name}: the upload is no longer on the server. Retry to send it again.`, 404);
      }
      if (!retryable(head.status)) throw refusal(head, name);
      cause = `HTTP ${head.status}`;
    }
  }
  return upload;
}
