// The WebSocket link to chatd (SPEC section 3): connects with the token in
// the query string, reconnects by itself with exponential backoff, notices a
// dead link with pings, and hands every server event to the app.

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 10000];
const PING_EVERY_MS = 25000;
const DEAD_AFTER_MS = 40000;
const CLOSE_POLICY_VIOLATION = 1008;

export class ChatSocket {
  /**
   * @param {object} hooks
   * @param {() => string} hooks.url           the ws(s):// URL with the current token
   * @param {(event: object) => void} hooks.onEvent
   * @param {(reconnected: boolean) => void} hooks.onOpen
   * @param {(state: string) => void} hooks.onState   'connecting' | 'open' | 'offline'
   * @param {() => void} hooks.onAuthExpired          close code 1008
   * @param {() => void} hooks.onConnectFailed        a connection that never opened
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.ws = null;
    this.attempt = 0;
    this.everOpened = false;
    this.stopped = true;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastReceived = 0;
    this.openedAt = 0;
    this.offlineUntil = 0;
    this.onOnline = () => {
      if (!this.stopped && !this.isOpen()) this.reconnectNow();
    };
  }

  isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    this.retryTimer = null;
    this.pingTimer = null;
    this.abandon(1000);
    this.everOpened = false;
    this.attempt = 0;
  }

  /**
   * Send one `{type, data}` object. Answers the frame's length (truthy) once
   * handed to the browser, false when the link is down (the caller keeps it).
   */
  send(type, data) {
    if (!this.isOpen()) return false;
    const frame = JSON.stringify(data === undefined ? { type } : { type, data });
    try {
      this.ws.send(frame);
      return frame.length;
    } catch {
      return false;
    }
  }

  /** Drop the link as a network failure would; the usual backoff brings it back. */
  drop() {
    if (!this.ws) return;
    const ws = this.ws;
    this.detach(ws);
    this.ws = null;
    try {
      ws.close(4000, 'dropped');
    } catch {
      // Already closing.
    }
    this.handleClose(4000, true);
  }

  reconnectNow() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.attempt = 0;
    if (this.ws && this.ws.readyState === WebSocket.CONNECTING) return;
    this.abandon(4000);
    this.connect();
  }

  /**
   * For tests: behave as if the network were gone for `ms` milliseconds
   * (the link drops and every attempt fails meanwhile, so the backoff grows).
   */
  simulateOffline(ms) {
    this.offlineUntil = Date.now() + ms;
    this.drop();
  }

  connect() {
    if (this.stopped) return;
    if (this.offlineUntil && Date.now() < this.offlineUntil) {
      this.hooks.onState('offline');
      this.scheduleReconnect();
      return;
    }
    this.hooks.onState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.hooks.url());
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.openedAt = Date.now();
      this.lastReceived = Date.now();
      const reconnected = this.everOpened;
      this.everOpened = true;
      this.hooks.onState('open');
      this.startPinging();
      this.hooks.onOpen(reconnected);
    };
    ws.onmessage = (event) => {
      this.lastReceived = Date.now();
      if (typeof event.data !== 'string') return;
      let parsed;
      try {
        parsed = JSON.parse(event.data);
      } catch {
        return;
      }
      if (parsed && typeof parsed.type === 'string') this.hooks.onEvent(parsed);
    };
    ws.onerror = () => {
      // A close event always follows; it decides what to do.
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (!opened) this.hooks.onConnectFailed();
      this.handleClose(event.code, opened);
    };
  }

  handleClose(code, wasOpen) {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    if (this.stopped) return;
    if (code === CLOSE_POLICY_VIOLATION) {
      this.hooks.onState('offline');
      this.hooks.onAuthExpired();
      return;
    }
    // A link that lived a while starts the backoff again from its first step;
    // one that keeps failing right after opening keeps growing it.
    if (wasOpen && Date.now() - this.openedAt > 3000) this.attempt = 0;
    this.hooks.onState('offline');
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  startPinging() {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (!this.isOpen()) return;
      if (Date.now() - this.lastReceived > DEAD_AFTER_MS) {
        // Half-open link: nothing came back, not even a pong.
        this.drop();
        return;
      }
      this.send('ping');
    }, PING_EVERY_MS);
  }

  detach(ws) {
    ws.onopen = null;
    ws.onmessage = null;
    ws.onerror = null;
    ws.onclose = null;
  }

  abandon(code) {
    if (!this.ws) return;
    const ws = this.ws;
    this.ws = null;
    this.detach(ws);
    try {
      ws.close(code);
    } catch {
      // Already closed.
    }
  }
}
