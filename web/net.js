// A WebSocket to the chat server that reconnects by itself.
//
// Backoff after a drop: 1 s, 2 s, 4 s, 8 s, 16 s, 30 s, 30 s, … each with ±25 %
// jitter (never above 30 s). The attempt counter resets once a connection has
// stayed open for a few seconds, so a server restart costs about one second.

const MAX_DELAY_MS = 30_000;
const STABLE_MS = 5_000;

/** `ws://host/ws` or `wss://host/ws` for the origin the page was loaded from. */
export function chatUrl(loc = window.location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/ws`;
}

/** Delay before reconnect attempt `attempt` (0-based), in milliseconds. */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(MAX_DELAY_MS, 1000 * 2 ** Math.min(attempt, 15));
  const jittered = base * (0.75 + random() * 0.5);
  return Math.round(Math.min(MAX_DELAY_MS, jittered));
}

export class ChatSocket {
  /**
   * @param {string} url
   * @param {{
   *   open?: (info: {reconnected: boolean}) => void,
   *   message?: (msg: any) => void,
   *   down?: (info: {code: number, wasOpen: boolean, delayMs: number}) => void,
   *   tick?: (secondsLeft: number) => void,
   * }} handlers
   */
  constructor(url, handlers) {
    this.url = url;
    this.h = handlers;
    this.ws = null;
    this.attempt = 0;
    this.everOpened = false;
    this.openedAt = 0;
    this.retryTimer = 0;
    this.tickTimer = 0;
    this.retryAt = 0;
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    this.clearTimers();
    if (this.ws) return;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleRetry(1006, false);
      return;
    }
    this.ws = ws;
    let wasOpen = false;
    ws.addEventListener('open', () => {
      wasOpen = true;
      this.openedAt = Date.now();
      const reconnected = this.everOpened;
      this.everOpened = true;
      this.h.open?.({ reconnected });
    });
    ws.addEventListener('message', (ev) => {
      if (typeof ev.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg && typeof msg === 'object' && typeof msg.type === 'string') {
        this.h.message?.(msg);
      }
    });
    ws.addEventListener('close', (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (wasOpen && Date.now() - this.openedAt >= STABLE_MS) this.attempt = 0;
      this.scheduleRetry(ev.code, wasOpen);
    });
    // 'error' is always followed by 'close'; nothing to do here.
  }

  /** Sends one protocol message; false when the socket is not open. */
  send(obj) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  /** Skips the remaining backoff wait. */
  retryNow() {
    if (this.ws) return;
    this.connect();
  }

  scheduleRetry(code, wasOpen) {
    const delayMs = backoffDelay(this.attempt);
    this.attempt += 1;
    this.retryAt = Date.now() + delayMs;
    this.h.down?.({ code, wasOpen, delayMs });
    this.retryTimer = window.setTimeout(() => this.connect(), delayMs);
    const tick = () => {
      const left = Math.max(0, Math.ceil((this.retryAt - Date.now()) / 1000));
      this.h.tick?.(left);
    };
    tick();
    this.tickTimer = window.setInterval(tick, 250);
  }

  clearTimers() {
    window.clearTimeout(this.retryTimer);
    window.clearInterval(this.tickTimer);
    this.retryTimer = 0;
    this.tickTimer = 0;
  }
}
