// Small DOM and formatting helpers. User text only ever goes through
// textContent or attribute setters; nothing is ever parsed as HTML.

/**
 * Create an element. `props` keys: `class`, `text`, `testid`, `dataset`,
 * `on<event>` listeners, `hidden`, or any attribute name.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'testid') node.dataset.testid = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'hidden') node.hidden = Boolean(value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (id) => document.getElementById(id);

/** Only http(s) and same-origin relative URLs are ever put into src/href. */
export function safeUrl(url) {
  if (typeof url !== 'string' || url === '') return null;
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
  } catch {
    return null;
  }
}

export function formatSize(bytes) {
  if (typeof bytes !== 'number' || !Number.isFinite(bytes) || bytes < 0) return '';
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export function formatDuration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return '';
  // Whole seconds elapsed, as media players show them; never 0:00 for a real sound.
  const total = seconds > 0 ? Math.max(1, Math.floor(seconds)) : 0;
  const m = Math.floor(total / 60);
  const s = total % 60;
  return `${m}:${String(s).padStart(2, '0')}`;
}

export function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** A short stamp for the room list: the time today, else the date. */
export function formatStamp(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const now = new Date();
  if (date.toDateString() === now.toDateString()) return formatTime(iso);
  return date.toLocaleDateString([], { day: 'numeric', month: 'short' });
}

export function formatDay(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const now = new Date();
  const yesterday = new Date(now);
  yesterday.setDate(now.getDate() - 1);
  if (date.toDateString() === now.toDateString()) return 'Today';
  if (date.toDateString() === yesterday.toDateString()) return 'Yesterday';
  return date.toLocaleDateString([], { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric' });
}

/** One or two initials for an avatar placeholder. */
export function initials(name) {
  const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
  const letters = parts.slice(0, 2).map((p) => Array.from(p)[0] || '');
  return (letters.join('') || '?').toUpperCase();
}

/** A stable hue per user id for avatar backgrounds. */
export function hueFor(id) {
  return (Number(id) * 137) % 360;
}

export function fillAvatar(node, user) {
  node.textContent = '';
  const url = user && safeUrl(user.avatar_url);
  node.style.setProperty('--hue', String(hueFor(user ? user.id : 0)));
  if (url) {
    const img = el('img', { src: url, alt: '' });
    // An avatar the page may not load (another origin is outside the CSP's
    // img-src, or the image is gone) shows the initials instead. Only while
    // it is still this node's avatar: a later fill may have replaced it.
    img.addEventListener('error', () => {
      if (img.parentNode === node) node.textContent = initials(user && user.name);
    }, { once: true });
    node.append(img);
  } else {
    node.textContent = initials(user && user.name);
  }
}

export function newTempId() {
  const random = Math.random().toString(36).slice(2, 10);
  return `t-${Date.now()}-${random}`;
}
