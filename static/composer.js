// The composer: text with Enter to send, typing notifications, attachment
// chips (picker, drag and drop, paste), voice recording, errors and progress.
// What it sends may answer a message (replies.js) or wait for a time
// (schedule.js).

import { $, el, formatDuration, formatSize } from './dom.js';
import { icon } from './icons.js';
import { audioDuration, canRecord, describeFile, MAX_FILES, VoiceRecorder } from './files.js';
import { cancelReply, renderReplyBar, replyFor } from './replies.js';
import { closeSchedulePicker, isPickerOpen, pickedSendAt } from './schedule.js';
import { state } from './state.js';

const TYPING_IDLE_MS = 3000;
const TYPING_REPEAT_MS = 2500;
/** The server passes on at most one typing frame per 250 ms per connection and drops the rest. */
const TYPING_GAP_MS = 300;
const MAX_CHARS = 5000;

let deps = null;
/** Attachment items of the composer (see files.describeFile). */
let attachments = [];
let errorTimer = null;
let typing = { roomId: null, lastSent: 0, idleTimer: null };
/** When the last typing frame left, the frames waiting for the gap to pass, and the timer that sends them. */
const typingFrame = { at: 0, timer: null };
const typingQueue = [];
let recorder = null;
let recordTimer = null;

export function initComposer(dependencies) {
  deps = dependencies;
  const input = $('composer-input');
  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      submit();
    } else if (event.key === 'Escape' && (replyFor(deps.getRoomId()) || isPickerOpen())) {
      // Escape undoes the reply first, then the schedule.
      event.preventDefault();
      event.stopPropagation();
      if (!cancelReply(deps.getRoomId())) closeSchedulePicker();
    }
  });
  input.addEventListener('input', () => {
    autosize();
    onTypingInput();
  });
  $('attach-button').addEventListener('click', () => $('file-input').click());
  $('file-input').addEventListener('change', () => {
    addFiles(Array.from($('file-input').files || []));
    $('file-input').value = '';
  });
  input.addEventListener('paste', (event) => {
    const files = Array.from((event.clipboardData && event.clipboardData.files) || []);
    if (files.length > 0) {
      event.preventDefault();
      addFiles(files);
    }
  });
  wireDragAndDrop();
  if (canRecord()) {
    $('record-button').hidden = false;
    $('record-button').addEventListener('click', startRecording);
    $('record-stop').addEventListener('click', finishRecording);
    $('record-cancel').addEventListener('click', cancelRecording);
  }
}

function autosize() {
  const input = $('composer-input');
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

export function focusComposer() {
  // On phones the keyboard would cover the conversation as soon as it opens.
  if (window.matchMedia('(pointer: fine)').matches) $('composer-input').focus();
}

// ------------------------------------------------------------------ drafts

export function saveDraft(roomId) {
  if (roomId === null) return;
  const text = $('composer-input').value;
  if (text || attachments.length > 0) state.drafts.set(roomId, { text, attachments });
  else state.drafts.delete(roomId);
  if (recorder) cancelRecording();
}

export function restoreDraft(roomId) {
  const draft = state.drafts.get(roomId);
  $('composer-input').value = draft ? draft.text : '';
  attachments = draft ? draft.attachments : [];
  renderChips();
  renderReplyBar();
  closeSchedulePicker();
  autosize();
  hideComposerError();
}

export function clearComposer() {
  // Typing frames still waiting belong to the session that ends.
  typingQueue.length = 0;
  clearTimeout(typingFrame.timer);
  typingFrame.timer = null;
  $('composer-input').value = '';
  attachments = [];
  renderChips();
  renderReplyBar();
  closeSchedulePicker();
  autosize();
  hideComposerError();
  setProgress(null);
  if (recorder) cancelRecording();
}

// ------------------------------------------------------------------ typing

function onTypingInput() {
  const roomId = deps.getRoomId();
  if (roomId === null) return;
  const hasText = $('composer-input').value.length > 0;
  if (!hasText) {
    stopTyping();
    return;
  }
  if (typing.roomId !== roomId) {
    stopTyping();
    typing.roomId = roomId;
    typing.lastSent = 0;
  }
  if (Date.now() - typing.lastSent > TYPING_REPEAT_MS) {
    if (sendTyping(roomId, true)) typing.lastSent = Date.now();
  }
  clearTimeout(typing.idleTimer);
  typing.idleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

/** Tell the other side we stopped typing (idle, sent, left the room). */
export function stopTyping() {
  clearTimeout(typing.idleTimer);
  if (typing.roomId !== null && typing.lastSent > 0 && deps) sendTyping(typing.roomId, false);
  typing = { roomId: null, lastSent: 0, idleTimer: null };
}

/**
 * Send a typing frame, spaced from the previous one by the server's gap:
 * frames inside it are dropped there, and a lost "stopped" (or a "started"
 * the server takes for a repeat of one before an unseen "stopped") leaves
 * the others with a wrong indicator. Frames wait in order; a frame that
 * undoes the one queued just before it cancels both.
 */
function sendTyping(roomId, isTyping) {
  const last = typingQueue[typingQueue.length - 1];
  const before = typingQueue[typingQueue.length - 2];
  if (last && last.roomId === roomId && last.isTyping === isTyping) return deps.socket.isOpen();
  if (last && before && last.roomId === roomId && before.roomId === roomId && before.isTyping === isTyping) {
    typingQueue.pop();
    return deps.socket.isOpen();
  }
  typingQueue.push({ roomId, isTyping });
  pumpTyping();
  return deps.socket.isOpen();
}

function pumpTyping() {
  if (typingFrame.timer) return;
  while (typingQueue.length > 0) {
    const wait = typingFrame.at + TYPING_GAP_MS - Date.now();
    if (wait > 0) {
      typingFrame.timer = setTimeout(() => {
        typingFrame.timer = null;
        pumpTyping();
      }, wait);
      return;
    }
    const frame = typingQueue.shift();
    if (deps.socket.send('typing', { room_id: frame.roomId, is_typing: frame.isTyping })) typingFrame.at = Date.now();
  }
}

// ------------------------------------------------------------- attachments

export function addFiles(files, extra = {}) {
  hideComposerError();
  for (const file of files) {
    if (attachments.length >= MAX_FILES) {
      showComposerError(`At most ${MAX_FILES} files per message.`);
      break;
    }
    const item = describeFile(file);
    item.id = `${Date.now()}-${Math.random().toString(36).slice(2)}`;
    if (item.category === 'voice') {
      if (typeof extra.duration === 'number' && extra.duration > 0) {
        item.duration = extra.duration;
      } else {
        item.durationPromise = audioDuration(file).then((seconds) => {
          item.duration = seconds;
          renderChips();
        });
      }
    }
    attachments.push(item);
  }
  renderChips();
  const firstError = attachments.find((a) => a.error);
  if (firstError) showComposerError(firstError.error);
  focusComposer();
}

function removeAttachment(id) {
  attachments = attachments.filter((a) => a.id !== id);
  renderChips();
  if (!attachments.some((a) => a.error)) hideComposerError();
}

function renderChips() {
  const list = $('attachment-chips');
  list.hidden = attachments.length === 0;
  list.replaceChildren(
    ...attachments.map((item) => {
      const glyph = item.category === 'image' ? 'image' : item.category === 'voice' ? 'mic' : 'file';
      const details = [formatSize(item.size)];
      if (item.category === 'voice' && typeof item.duration === 'number') details.push(formatDuration(item.duration));
      return el(
        'li',
        { class: `chip${item.error ? ' invalid' : ''}`, testid: 'attachment-chip', title: item.error || item.name },
        el('span', { class: 'chip-icon' }, icon(glyph, { size: 16 })),
        el('span', { class: 'chip-name', testid: 'chip-name', text: item.name }),
        el('span', { class: 'chip-size', testid: 'chip-size', text: details.join(' · ') }),
        el('button', {
          type: 'button', class: 'chip-remove', testid: 'chip-remove', 'aria-label': `Remove ${item.name}`, text: '×',
          onclick: () => removeAttachment(item.id),
        }),
      );
    }),
  );
}

function wireDragAndDrop() {
  const zone = $('conv-main');
  const overlay = $('drop-overlay');
  let depth = 0;
  const hasFiles = (event) => Array.from((event.dataTransfer && event.dataTransfer.types) || []).includes('Files');
  zone.addEventListener('dragenter', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth += 1;
    overlay.hidden = false;
  });
  zone.addEventListener('dragover', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
  });
  zone.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) overlay.hidden = true;
  });
  zone.addEventListener('drop', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth = 0;
    overlay.hidden = true;
    addFiles(Array.from(event.dataTransfer.files || []));
  });
  // A file dropped beside the zone must not navigate away from the chat.
  window.addEventListener('dragover', (event) => event.preventDefault());
  window.addEventListener('drop', (event) => event.preventDefault());
}

// ------------------------------------------------------------------ send

let preparing = false;

async function submit() {
  if (preparing || recorder) return;
  const roomId = deps.getRoomId();
  if (roomId === null) return;
  const input = $('composer-input');
  const content = input.value.trim();
  const items = attachments.slice();
  if (!content && items.length === 0) return;
  if (Array.from(content).length > MAX_CHARS) {
    showComposerError(`A message can have at most ${MAX_CHARS} characters.`);
    return;
  }
  const invalid = items.find((a) => a.error);
  if (invalid) {
    showComposerError(`${invalid.error}. Remove it to send.`);
    return;
  }
  const schedule = pickedSendAt();
  if (schedule && schedule.error) {
    showComposerError(schedule.error);
    return;
  }
  preparing = true;
  try {
    await Promise.all(items.map((a) => a.durationPromise).filter(Boolean));
  } finally {
    preparing = false;
  }
  if (deps.getRoomId() !== roomId) return;
  hideComposerError();
  input.value = '';
  attachments = [];
  state.drafts.delete(roomId);
  renderChips();
  autosize();
  stopTyping();
  const replyTo = replyFor(roomId);
  cancelReply(roomId);
  if (schedule) closeSchedulePicker();
  deps.submit({ roomId, content, items, replyTo, sendAt: schedule ? schedule.iso : null });
}

// ----------------------------------------------------------- errors, progress

export function showComposerError(text) {
  const node = $('composer-error');
  node.textContent = text;
  node.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(hideComposerError, 12000);
}

export function hideComposerError() {
  clearTimeout(errorTimer);
  const node = $('composer-error');
  node.hidden = true;
  node.textContent = '';
}

/** fraction in 0..1 with a label, or null to hide. */
export function setProgress(fraction, label = '') {
  const node = $('send-progress');
  if (fraction === null) {
    node.hidden = true;
    return;
  }
  node.hidden = false;
  node.querySelector('.send-progress-bar span').style.width = `${Math.round(Math.max(0, Math.min(1, fraction)) * 100)}%`;
  node.querySelector('.send-progress-label').textContent = label;
}

// ----------------------------------------------------------- voice recording

async function startRecording() {
  if (recorder) return;
  hideComposerError();
  const candidate = new VoiceRecorder();
  try {
    await candidate.start();
  } catch (error) {
    showComposerError(`Cannot record: ${error && error.message ? error.message : 'no microphone'}`);
    return;
  }
  recorder = candidate;
  $('recording-bar').hidden = false;
  $('record-button').disabled = true;
  $('recording-time').textContent = '0:00';
  recordTimer = setInterval(() => {
    const seconds = recorder ? recorder.elapsedSeconds() : 0;
    $('recording-time').textContent = formatDuration(seconds);
    if (seconds >= 600) finishRecording();
  }, 250);
}

function endRecordingUi() {
  clearInterval(recordTimer);
  recordTimer = null;
  $('recording-bar').hidden = true;
  $('record-button').disabled = false;
}

function cancelRecording() {
  if (!recorder) return;
  recorder.cancel();
  recorder = null;
  endRecordingUi();
}

async function finishRecording() {
  if (!recorder) return;
  const current = recorder;
  recorder = null;
  endRecordingUi();
  try {
    const { blob, duration, name } = await current.stop();
    if (!duration) throw new Error('the recording is empty');
    const file = new File([blob], name, { type: blob.type });
    addFiles([file], { duration });
  } catch (error) {
    showComposerError(`Could not record: ${error && error.message ? error.message : error}`);
  }
}
