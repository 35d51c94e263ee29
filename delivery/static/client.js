// Browser client for the delivery gateway (wire protocol: docs/protocol.md). No dependencies.
//
//   import { DeliveryClient } from "/client.js";
//   const client = new DeliveryClient("ws://host:8765/ws", token);
//   client.addEventListener("message", (e) => show(e.detail));   // acked after the handlers run
//   client.addEventListener("message", async (e) => { await save(e.detail); }); // ... resolve
//   await client.connect();
//
// Behaviour matches the Python client (delivery.client): hello -> welcome, each message shown
// once (duplicates by id are dropped and acked again), automatic acks (or manual: autoAck:
// false, then client.ack(id)), reconnect with exponential backoff and jitter, and the gateway
// replays everything not acked. A 1008 close before welcome (bad or expired token) is final.
//
// Acks wait for the application: a "message" listener that returns a promise (an async
// function), or calls event.waitUntil(promise), is awaited before the id is recorded and acked.
// If a listener throws or its promise rejects, the message is not acked: the gateway delivers
// it again (after its ack timeout, or on the next connect) and it is shown again.
//
// Keepalive: browsers cannot send WebSocket pings, so every pingIntervalMs (default 25 s) the
// client sends {"type": "ping"}; with no frame back within pongTimeoutMs (default 10 s) the
// connection is taken as dead (a sleeping laptop, a NAT that dropped it) and replaced. The pings
// also keep the gateway from closing an idle connection (idle_timeout_s, 600 s).
//
// Shown once across page reloads: once the "message" handlers have run (or on client.ack(id)),
// the id is recorded in localStorage for this user (the most recent dedupeSize, default 5,000;
// see SeenIds), then acked; a replayed copy of a recorded id is acked again, not shown. Without
// usable localStorage (or with options.storage: null) the ids are kept in memory only.
//
// Events: "welcome" {conn, user}, "message" {id, from, body, sent_at, conn}, "error" (error
// frames), "status" {status: "connecting"|"open"|"closed"|"failed", code, reason}.

export const POLICY_VIOLATION = 1008;
// A newer connection of the same user took this one's slot: reconnecting would evict another.
export const TOO_MANY_CONNECTIONS = 4008;

export function gatewayUrl(loc = globalThis.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws`;
}

export class DeliveryClient extends EventTarget {
  constructor(url, token, options = {}) {
    super();
    this.url = url;
    this.token = token; // a string, or a function returning a string or a Promise of one
    this.autoAck = options.autoAck ?? true;
    this.reconnect = options.reconnect ?? true;
    this.backoffInitialMs = options.backoffInitialMs ?? 100;
    this.backoffMaxMs = options.backoffMaxMs ?? 5000;
    this.dedupeSize = options.dedupeSize ?? 5000;
    this.storage = options.storage === undefined ? usableLocalStorage() : options.storage;
    this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    this.pingIntervalMs = options.pingIntervalMs ?? 25000;
    this.pongTimeoutMs = options.pongTimeoutMs ?? 10000;
    this._listeners = new WeakMap(); // application "message" listener -> our wrapper
    this._pingTimer = null;
    this._pongTimer = null;
    this.seen = null; // SeenIds of this.user, opened at welcome
    this.pending = new Set(); // emitted, not yet recorded: a copy now is dropped without an ack
    this.ws = null;
    this.conn = null;
    this.user = null;
    this.status = "idle";
    this.closing = false;
    this.delay = this.backoffInitialMs;
    this.stats = {
      connects: 0, received: 0, duplicates: 0, acksSent: 0, pings: 0, pongTimeouts: 0,
      handlerFailures: 0,
    };
    this._welcomeWaiters = [];
  }

  connect() {
    this.closing = false;
    const p = new Promise((resolve, reject) => this._welcomeWaiters.push({ resolve, reject }));
    if (!this.ws) this._open();
    return p;
  }

  close() {
    this.closing = true;
    this._stopKeepalive();
    if (this.ws) this.ws.close(1000, "client closing");
  }

  // "message" listeners may be async: their promise is awaited before the ack (see above).
  addEventListener(type, listener, options) {
    if (type !== "message" || typeof listener !== "function") {
      super.addEventListener(type, listener, options);
      return;
    }
    let wrapper = this._listeners.get(listener);
    if (!wrapper) {
      wrapper = (event) => {
        try {
          const result = listener.call(this, event);
          if (result && typeof result.then === "function") event.waitUntil(result);
        } catch (err) {
          event.waitUntil(Promise.reject(err));
        }
      };
      this._listeners.set(listener, wrapper);
    }
    super.addEventListener(type, wrapper, options);
  }

  removeEventListener(type, listener, options) {
    super.removeEventListener(type, this._listeners.get(listener) ?? listener, options);
  }

  // The application has the message: record its id, then ack it.
  ack(id) {
    if (this.seen) this.seen.add(id);
    this.pending.delete(id);
    return this._sendAck(id);
  }

  _sendAck(id) {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1 || !this.conn) return false;
    ws.send(JSON.stringify({ type: "ack", id }));
    this.stats.acksSent += 1;
    return true;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setStatus(status, extra = {}) {
    this.status = status;
    this._emit("status", { status, ...extra });
  }

  async _open() {
    this._setStatus("connecting");
    let token;
    try {
      token = typeof this.token === "function" ? await this.token() : this.token;
    } catch (err) {
      this._scheduleReconnect(false);
      return;
    }
    const ws = new this.WebSocketImpl(this.url);
    this.ws = ws;
    let welcomed = false;
    ws.onopen = () => ws.send(JSON.stringify({ type: "hello", token }));
    ws.onmessage = (ev) => {
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (err) {
        return;
      }
      this._heard();
      if (frame.type === "welcome") {
        welcomed = true;
        this.conn = frame.conn;
        if (!this.seen || this.seen.user !== frame.user) {
          this.seen = new SeenIds(frame.user, { maxIds: this.dedupeSize, storage: this.storage });
        }
        this.user = frame.user;
        this.delay = this.backoffInitialMs;
        this.stats.connects += 1;
        this._startKeepalive(ws);
        this._setStatus("open", { conn: frame.conn, user: frame.user });
        this._emit("welcome", frame);
        for (const w of this._welcomeWaiters.splice(0)) w.resolve(frame);
      } else if (frame.type === "message") {
        this._onMessage(frame);
      } else if (frame.type === "error") {
        this._emit("error", frame);
      }
    };
    ws.onclose = (ev) => this._closed(ws, welcomed, ev.code, ev.reason);
  }

  // The socket ended (closed, or given up on after a missing pong): reconnect unless final.
  _closed(ws, welcomed, code, reason) {
    if (this.ws !== ws) return;
    this._stopKeepalive();
    this.ws = null;
    this.conn = null;
    if ((!welcomed && code === POLICY_VIOLATION) || code === TOO_MANY_CONNECTIONS) {
      this._setStatus("failed", { code, reason });
      const err = new Error(`gateway refused the connection: ${code} ${reason}`);
      for (const w of this._welcomeWaiters.splice(0)) w.reject(err);
      return;
    }
    this._setStatus("closed", { code, reason });
    if (this.closing || !this.reconnect) return;
    this._scheduleReconnect(welcomed);
  }

  _startKeepalive(ws) {
    this._stopKeepalive();
    if (!(this.pingIntervalMs > 0)) return;
    this._pingTimer = setInterval(() => {
      if (this.ws !== ws || ws.readyState !== 1) return;
      ws.send(JSON.stringify({ type: "ping" }));
      this.stats.pings += 1;
      if (this._pongTimer === null) {
        this._pongTimer = setTimeout(() => this._pongMissing(ws), this.pongTimeoutMs);
      }
    }, this.pingIntervalMs);
  }

  _stopKeepalive() {
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._pingTimer = null;
    this._pongTimer = null;
  }

  // Any frame from the gateway (a pong, or anything else) shows the connection is alive.
  _heard() {
    clearTimeout(this._pongTimer);
    this._pongTimer = null;
  }

  // No answer to a ping: a dead connection may take minutes to report its close, so stop
  // listening to it and connect again now (the gateway replays whatever was not acked).
  _pongMissing(ws) {
    if (this.ws !== ws) return;
    this.stats.pongTimeouts += 1;
    ws.onmessage = null;
    ws.onclose = null;
    try {
      ws.close(4000, "no pong");
    } catch (err) {
      // already closing
    }
    this._closed(ws, true, 1006, "no pong"); // keepalive runs only after welcome
  }

  _scheduleReconnect(welcomed) {
    if (welcomed) this.delay = this.backoffInitialMs;
    const wait = this.delay * (0.5 + Math.random());
    this.delay = Math.min(this.backoffMaxMs, this.delay * 2);
    setTimeout(() => {
      if (!this.closing && !this.ws) this._open();
    }, wait);
  }

  _onMessage(frame) {
    this.stats.received += 1;
    const id = String(frame.id);
    if (this.pending.has(id)) {
      this.stats.duplicates += 1; // the first copy is still with the application
      return;
    }
    if (this.seen && this.seen.has(id)) {
      this.stats.duplicates += 1;
      this._sendAck(id); // our earlier ack was lost (or the page reloaded first): say it again
      return;
    }
    this.pending.add(id);
    const msg = { id, from: frame.from, body: frame.body, sent_at: frame.sent_at, conn: this.conn };
    const waits = [];
    const event = new CustomEvent("message", { detail: msg });
    event.waitUntil = (promise) => waits.push(Promise.resolve(promise));
    this.dispatchEvent(event);
    if (!this.autoAck) return;
    if (waits.length === 0) {
      this.ack(id);
      return;
    }
    Promise.all(waits).then(
      () => this.ack(id),
      (err) => {
        // Not acked: delivered again later, and then shown again.
        this.pending.delete(id);
        this.stats.handlerFailures += 1;
        this._emit("handlererror", { id, error: err });
      },
    );
  }
}

// Message ids shown to one user, the most recent maxIds (up to one chunk more), kept in a
// Storage (localStorage by default) so that they survive a page reload. Ids are stored in
// chunks of maxIds / 10 under "PREFIX/USER/N", the newest chunk's number under "PREFIX/USER"
// (USER URI-encoded, so no user's keys collide with another's):
// an add rewrites only the newest chunk, and the oldest chunk goes once enough newer ones
// hold maxIds. A storage that fails (quota, privacy mode) is replaced by memory.
export class SeenIds {
  constructor(user, options = {}) {
    const { maxIds = 5000, storage = usableLocalStorage(), prefix = "delivery.seen.v1" } = options;
    this.user = user;
    this.storage = storage ?? memoryStorage();
    this.headKey = `${prefix}/${encodeURIComponent(user)}`;
    this.chunkSize = Math.max(1, Math.ceil(maxIds / 10));
    this.fullChunks = Math.ceil(maxIds / this.chunkSize); // kept besides the newest one
    this.ids = new Set();
    const head = this._head();
    for (let n = head - this.fullChunks; n <= head; n += 1) {
      for (const id of this._chunk(n)) this.ids.add(id);
    }
  }

  has(id) {
    return this.ids.has(id);
  }

  add(id) {
    if (this.ids.has(id)) return;
    this.ids.add(id);
    // Re-read: another tab of the same user may have added ids since.
    let head = this._head();
    let chunk = this._chunk(head);
    if (chunk.length >= this.chunkSize) {
      head += 1;
      chunk = [];
      const old = head - this.fullChunks - 1;
      for (const gone of this._chunk(old)) this.ids.delete(gone);
      this._try(() => this.storage.removeItem(`${this.headKey}/${old}`));
    }
    chunk.push(id);
    this._try(() => {
      this.storage.setItem(`${this.headKey}/${head}`, JSON.stringify(chunk));
      this.storage.setItem(this.headKey, String(head));
    });
  }

  _head() {
    const n = Number.parseInt(this._try(() => this.storage.getItem(this.headKey)) ?? "0", 10);
    return Number.isFinite(n) ? n : 0;
  }

  _chunk(n) {
    try {
      const ids = JSON.parse(this.storage.getItem(`${this.headKey}/${n}`) ?? "[]");
      return Array.isArray(ids) ? ids.map(String) : [];
    } catch (err) {
      return [];
    }
  }

  _try(fn) {
    try {
      return fn();
    } catch (err) {
      // Storage full or gone: keep going in memory (what is in this.ids is kept).
      this.storage = memoryStorage();
      return null;
    }
  }
}

function usableLocalStorage() {
  try {
    const s = globalThis.localStorage;
    s.setItem("delivery.probe", "1");
    s.removeItem("delivery.probe");
    return s;
  } catch (err) {
    return null; // none, disabled, or throwing (sandboxed frame, privacy mode)
  }
}

function memoryStorage() {
  const items = new Map();
  return {
    getItem: (k) => (items.has(k) ? items.get(k) : null),
    setItem: (k, v) => void items.set(k, String(v)),
    removeItem: (k) => void items.delete(k),
  };
}
