// Browser client for the delivery gateway (wire protocol: docs/protocol.md). No dependencies.
//
//   import { DeliveryClient } from "/client.js";
//   const client = new DeliveryClient("ws://host:8765/ws", token);
//   client.addEventListener("message", (e) => show(e.detail));   // acked after the handlers run
//   await client.connect();
//
// Behaviour matches the Python client (delivery.client): hello -> welcome, each message shown
// once (duplicates by id are dropped and acked again), automatic acks (or manual: autoAck:
// false, then client.ack(id)), reconnect with exponential backoff and jitter, and the gateway
// replays everything not acked. A 1008 close before welcome (bad or expired token) is final.
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
    this.dedupeSize = options.dedupeSize ?? 10000;
    this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    this.seen = new Map(); // message id -> acked (insertion-ordered, bounded)
    this.ws = null;
    this.conn = null;
    this.user = null;
    this.status = "idle";
    this.closing = false;
    this.delay = this.backoffInitialMs;
    this.stats = { connects: 0, received: 0, duplicates: 0, acksSent: 0 };
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
    if (this.ws) this.ws.close(1000, "client closing");
  }

  ack(id) {
    if (this.seen.has(id)) this.seen.set(id, true);
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
      if (frame.type === "welcome") {
        welcomed = true;
        this.conn = frame.conn;
        this.user = frame.user;
        this.delay = this.backoffInitialMs;
        this.stats.connects += 1;
        this._setStatus("open", { conn: frame.conn, user: frame.user });
        this._emit("welcome", frame);
        for (const w of this._welcomeWaiters.splice(0)) w.resolve(frame);
      } else if (frame.type === "message") {
        this._onMessage(frame);
      } else if (frame.type === "error") {
        this._emit("error", frame);
      }
    };
    ws.onclose = (ev) => {
      this.ws = null;
      this.conn = null;
      if ((!welcomed && ev.code === POLICY_VIOLATION) || ev.code === TOO_MANY_CONNECTIONS) {
        this._setStatus("failed", { code: ev.code, reason: ev.reason });
        const err = new Error(`gateway refused the connection: ${ev.code} ${ev.reason}`);
        for (const w of this._welcomeWaiters.splice(0)) w.reject(err);
        return;
      }
      this._setStatus("closed", { code: ev.code, reason: ev.reason });
      if (this.closing || !this.reconnect) return;
      this._scheduleReconnect(welcomed);
    };
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
    if (this.seen.has(id)) {
      this.stats.duplicates += 1;
      if (this.seen.get(id)) this.ack(id); // our earlier ack was lost: say it again
      return;
    }
    this.seen.set(id, false);
    if (this.seen.size > this.dedupeSize) this.seen.delete(this.seen.keys().next().value);
    const msg = { id, from: frame.from, body: frame.body, sent_at: frame.sent_at, conn: this.conn };
    this._emit("message", msg);
    if (this.autoAck) this.ack(id);
  }
}
