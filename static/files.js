// Attachments (SPEC section 4): what the server takes, audio durations, and
// voice recording converted to WAV. They are sent as uploads (uploads.js).

const MB = 1024 * 1024;
export const MAX_FILES = 10;

/** extension → [mime type the server accepts, category] */
const BY_EXTENSION = {
  jpg: ['image/jpeg', 'image'],
  jpeg: ['image/jpeg', 'image'],
  png: ['image/png', 'image'],
  gif: ['image/gif', 'image'],
  webp: ['image/webp', 'image'],
  pdf: ['application/pdf', 'file'],
  doc: ['application/msword', 'file'],
  docx: ['application/vnd.openxmlformats-officedocument.wordprocessingml.document', 'file'],
  xls: ['application/vnd.ms-excel', 'file'],
  xlsx: ['application/vnd.openxmlformats-officedocument.spreadsheetml.sheet', 'file'],
  txt: ['text/plain', 'file'],
  zip: ['application/zip', 'file'],
  rar: ['application/vnd.rar', 'file'],
  mp3: ['audio/mpeg', 'voice'],
  wav: ['audio/wav', 'voice'],
};

/** Other spellings browsers give the same types; all accepted by the server. */
const MIME_ALIASES = {
  'image/jpeg': ['jpg', 'jpeg'],
  'image/png': ['png'],
  'image/gif': ['gif'],
  'image/webp': ['webp'],
  'application/pdf': ['pdf'],
  'application/msword': ['doc'],
  'application/vnd.openxmlformats-officedocument.wordprocessingml.document': ['docx'],
  'application/vnd.ms-excel': ['xls'],
  'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet': ['xlsx'],
  'text/plain': ['txt'],
  'application/zip': ['zip'],
  'application/x-zip-compressed': ['zip'],
  'application/vnd.rar': ['rar'],
  'application/x-rar-compressed': ['rar'],
  'audio/mpeg': ['mp3'],
  'audio/mp3': ['mp3'],
  'audio/wav': ['wav'],
  'audio/x-wav': ['wav'],
  'audio/wave': ['wav'],
};

const LIMITS = { image: 10 * MB, file: 50 * MB, voice: 50 * MB };

export function extensionOf(name) {
  const match = /\.([A-Za-z0-9]+)$/.exec(String(name || ''));
  return match ? match[1].toLowerCase() : '';
}

/**
 * What the client knows about a picked file before sending it:
 * `{file, name, size, mime, category, error}`; `error` is set when the
 * server would refuse it anyway.
 */
export function describeFile(file, name = file.name) {
  const ext = extensionOf(name);
  const known = BY_EXTENSION[ext];
  const item = { file, name, size: file.size, mime: null, category: null, duration: null, error: null };
  if (!known) {
    item.error = `${name}: file type not allowed`;
    return item;
  }
  const [canonicalMime, category] = known;
  const given = String(file.type || '').split(';')[0].trim().toLowerCase();
  // Keep the browser's type when it is an accepted spelling for this
  // extension, else the canonical one for the extension.
  item.mime = MIME_ALIASES[given] && MIME_ALIASES[given].includes(ext) ? given : canonicalMime;
  item.category = category;
  const limit = LIMITS[category];
  if (file.size > limit) {
    item.error = `${name}: file too large. Maximum size: ${(limit / MB).toFixed(1)}MB`;
  } else if (file.size === 0) {
    item.error = `${name}: the file is empty`;
  }
  return item;
}

/** All images → image; all audio with a known duration → voice; else file. */
export function chooseMessageType(items) {
  if (items.length === 0) return 'text';
  if (items.every((i) => i.category === 'image')) return 'image';
  if (items.every((i) => i.category === 'voice' && typeof i.duration === 'number' && i.duration > 0)) {
    return 'voice';
  }
  return 'file';
}

function roundDuration(seconds) {
  return Math.round(seconds * 100) / 100;
}

/** Seconds of audio from an <audio> element's metadata; null when unknown. */
function durationFromMediaElement(blob) {
  return new Promise((resolve) => {
    const url = URL.createObjectURL(blob);
    const audio = document.createElement('audio');
    let done = false;
    const finish = (value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      audio.removeAttribute('src');
      audio.load();
      URL.revokeObjectURL(url);
      resolve(value);
    };
    const timer = setTimeout(() => finish(null), 4000);
    audio.preload = 'metadata';
    audio.onloadedmetadata = () => {
      const d = audio.duration;
      finish(Number.isFinite(d) && d > 0 ? d : null);
    };
    audio.onerror = () => finish(null);
    audio.src = url;
  });
}

/** A PCM WAV file's duration from its header (fmt byte rate, data size). */
async function durationFromWavHeader(blob) {
  const head = new DataView(await blob.slice(0, Math.min(blob.size, 4096)).arrayBuffer());
  const tag = (offset) =>
    String.fromCharCode(head.getUint8(offset), head.getUint8(offset + 1), head.getUint8(offset + 2), head.getUint8(offset + 3));
  if (head.byteLength < 12 || tag(0) !== 'RIFF' || tag(8) !== 'WAVE') return null;
  let offset = 12;
  let byteRate = 0;
  while (offset + 8 <= head.byteLength) {
    const id = tag(offset);
    const size = head.getUint32(offset + 4, true);
    if (id === 'fmt ' && offset + 16 <= head.byteLength) byteRate = head.getUint32(offset + 16, true);
    if (id === 'data') {
      const dataSize = Math.min(size, blob.size - offset - 8);
      return byteRate > 0 ? dataSize / byteRate : null;
    }
    offset += 8 + size + (size % 2);
  }
  return null;
}

/** Duration in seconds of an audio file, or null when it cannot be told. */
export async function audioDuration(blob) {
  let seconds = await durationFromMediaElement(blob);
  if (!seconds) {
    try {
      seconds = await durationFromWavHeader(blob);
    } catch {
      seconds = null;
    }
  }
  return seconds && seconds > 0 ? roundDuration(seconds) : null;
}

/** 16-bit PCM mono WAV from Float32 samples. */
export function encodeWav(samples, sampleRate) {
  const bytesPerSample = 2;
  const dataSize = samples.length * bytesPerSample;
  const buffer = new ArrayBuffer(44 + dataSize);
  const view = new DataView(buffer);
  const writeTag = (offset, text) => {
    for (let i = 0; i < text.length; i += 1) view.setUint8(offset + i, text.charCodeAt(i));
  };
  writeTag(0, 'RIFF');
  view.setUint32(4, 36 + dataSize, true);
  writeTag(8, 'WAVE');
  writeTag(12, 'fmt ');
  view.setUint32(16, 16, true); // PCM fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, sampleRate * bytesPerSample, true);
  view.setUint16(32, bytesPerSample, true);
  view.setUint16(34, 16, true);
  writeTag(36, 'data');
  view.setUint32(40, dataSize, true);
  let offset = 44;
  for (let i = 0; i < samples.length; i += 1) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(offset, s < 0 ? s * 0x8000 : s * 0x7fff, true);
    offset += 2;
  }
  return new Blob([buffer], { type: 'audio/wav' });
}

const WAV_RATE = 16000;

/** Decode any recording the browser can play and re-encode it as 16 kHz mono WAV. */
export async function toWav(blob) {
  const Offline = window.OfflineAudioContext || window.webkitOfflineAudioContext;
  if (!Offline) throw new Error('This browser cannot convert recordings');
  const decoder = new Offline(1, 1, WAV_RATE);
  const decoded = await decoder.decodeAudioData(await blob.arrayBuffer());
  const length = Math.max(1, Math.ceil(decoded.duration * WAV_RATE));
  const mixer = new Offline(1, length, WAV_RATE);
  const source = mixer.createBufferSource();
  source.buffer = decoded;
  source.connect(mixer.destination);
  source.start();
  const rendered = await mixer.startRendering();
  return { blob: encodeWav(rendered.getChannelData(0), WAV_RATE), duration: roundDuration(decoded.duration) };
}

export function canRecord() {
  return typeof window.MediaRecorder === 'function' && !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

/** One voice recording: start(), then stop() → {blob, duration, name} as WAV (or MP3 if recorded so). */
export class VoiceRecorder {
  constructor() {
    this.stream = null;
    this.recorder = null;
    this.chunks = [];
    this.startedAt = 0;
  }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    this.chunks = [];
    this.recorder = new MediaRecorder(this.stream);
    this.recorder.ondataavailable = (event) => {
      if (event.data && event.data.size > 0) this.chunks.push(event.data);
    };
    this.recorder.start(250);
    this.startedAt = Date.now();
  }

  elapsedSeconds() {
    return this.startedAt ? (Date.now() - this.startedAt) / 1000 : 0;
  }

  cancel() {
    if (this.recorder && this.recorder.state !== 'inactive') {
      this.recorder.onstop = null;
      this.recorder.stop();
    }
    this.release();
  }

  async stop() {
    const recorder = this.recorder;
    if (!recorder) throw new Error('Not recording');
    const stopped = new Promise((resolve) => {
      recorder.onstop = resolve;
    });
    if (recorder.state !== 'inactive') recorder.stop();
    await stopped;
    this.release();
    const type = (recorder.mimeType || (this.chunks[0] && this.chunks[0].type) || '').split(';')[0];
    const recorded = new Blob(this.chunks, { type: type || 'audio/webm' });
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '_');
    if (type === 'audio/mpeg' || type === 'audio/wav') {
      const duration = await audioDuration(recorded);
      return { blob: recorded, duration, name: `voice_${stamp}.${type === 'audio/mpeg' ? 'mp3' : 'wav'}` };
    }
    // The server takes audio/mpeg and audio/wav only: convert webm/ogg to WAV.
    const { blob, duration } = await toWav(recorded);
    return { blob, duration, name: `voice_${stamp}.wav` };
  }

  release() {
    if (this.stream) {
      for (const track of this.stream.getTracks()) track.stop();
    }
    this.stream = null;
    this.recorder = null;
  }
}
