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
// Conversation order: a message with conversation, seq and prev (docs/protocol.md) waits,
// unacked, while the one numbered prev (the previous one addressed to this user) has not been
// shown, at most orderWaitMs (default 2000) after it arrived; then the gap is skipped (a
// "gap" event, stats.gapsSkipped) and a missing message that arrives afterwards is still shown,
// with late: true (place it by its seq). The highest seq shown per conversation is kept in
// localStorage (OrderMarks), so after a reload the order continues from there; a conversation
// with nothing recorded starts before seq 1 (a message with prev 0 is shown at once). OrderBuffer below is the same state machine
// as delivery/client_order.py; the tests run both on the same inputs.
//
// Receipts (to the sender of a group message): a "receipt" event {id, message, conversation,
// seq, status, user | count+of}, acked after its listeners (async ones awaited, as for
// messages); each receipt id is handed over once. client.markRead(conversation, seq) sends a
// read frame; marks made while disconnected, or on a connection that then dropped, are sent
// again after the next welcome.
//
// Events: "welcome" {conn, user}, "message" {id, from, body, sent_at, conn, conversation, seq,
// message, late}, "receipt", "gap" {conversation, first, last}, "error" (error frames),
// "status" {status: "connecting"|"open"|"closed"|"failed", code, reason}.

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
    this.orderWaitS = (options.orderWaitMs ?? 2000) / 1000;
    this.order = new OrderBuffer(this.orderWaitS);
    this.orderMarks = null; // OrderMarks of this.user, opened at welcome
    this.places = new Map(); // handed over, not yet recorded: id -> [conversation, seq]
    this._orderTimer = null;
    this.receiptIds = new Set(); // receipts handed over (most recent 10,000)
    this.receiptPending = new Set();
    this.readsToSend = new Map(); // conversation -> seq, since the last welcome
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
      handlerFailures: 0, receipts: 0, readsSent: 0, held: 0, gapsSkipped: 0, late: 0,
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
    clearTimeout(this._orderTimer);
    if (this.ws) this.ws.close(1000, "client closing");
  }

  // "message" listeners may be async: their promise is awaited before the ack (see above).
  addEventListener(type, listener, options) {
    if ((type !== "message" && type !== "receipt") || typeof listener !== "function") {
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
    const place = this.places.get(id);
    if (place && this.orderMarks) this.orderMarks.mark(place[0], place[1]);
    this.places.delete(id);
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
          // Continue each conversation's order from what this user was shown before.
          this.order = new OrderBuffer(this.orderWaitS);
          this.orderMarks = new OrderMarks(frame.user, { storage: this.storage });
          for (const [conversation, seq] of this.orderMarks.entries()) {
            this.order.resume(conversation, seq);
          }
        }
        this.user = frame.user;
        this.delay = this.backoffInitialMs;
        this.stats.connects += 1;
        this._startKeepalive(ws);
        this._setStatus("open", { conn: frame.conn, user: frame.user });
        this._emit("welcome", frame);
        for (const w of this._welcomeWaiters.splice(0)) w.resolve(frame);
        this._resendReads();
      } else if (frame.type === "message") {
        this._onMessage(frame);
      } else if (frame.type === "receipt") {
        this._onReceipt(frame);
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

  // Everything up to seq of the conversation was read: its senders get read receipts.
  markRead(conversation, seq) {
    if (typeof conversation !== "string" || !conversation) throw new TypeError("conversation");
    if (!Number.isInteger(seq) || seq < 1) throw new TypeError("seq must be a positive integer");
    if (seq > (this.readsToSend.get(conversation) ?? 0)) {
      this.readsToSend.delete(conversation);
      this.readsToSend.set(conversation, seq);
      while (this.readsToSend.size > 100) {
        this.readsToSend.delete(this.readsToSend.keys().next().value);
      }
    }
    return this._sendRead(conversation, seq);
  }

  _sendRead(conversation, seq) {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1 || !this.conn) return false;
    ws.send(JSON.stringify({ type: "read", conversation, seq }));
    this.stats.readsSent += 1;
    return true;
  }

  // A read frame has no answer: the marks since the previous welcome go again, once.
  _resendReads() {
    const marks = this.readsToSend;
    this.readsToSend = new Map();
    for (const [conversation, seq] of marks) this._sendRead(conversation, seq);
  }

  _onReceipt(frame) {
    this.stats.receipts += 1;
    const id = String(frame.id);
    if (this.receiptPending.has(id)) return;
    if (this.receiptIds.has(id)) {
      this._sendAck(id); // our earlier ack was lost
      return;
    }
    this.receiptPending.add(id);
    const waits = [];
    const event = new CustomEvent("receipt", { detail: { ...frame, id } });
    event.waitUntil = (promise) => waits.push(Promise.resolve(promise));
    this.dispatchEvent(event);
    Promise.all(waits).then(
      () => {
        this.receiptPending.delete(id);
        this.receiptIds.add(id);
        if (this.receiptIds.size > 10000) {
          this.receiptIds.delete(this.receiptIds.values().next().value);
        }
        this._sendAck(id);
      },
      (err) => {
        this.receiptPending.delete(id); // not acked: it comes again after a reconnect
        this.stats.handlerFailures += 1;
        this._emit("handlererror", { id, error: err });
      },
    );
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
    const msg = {
      id, from: frame.from, body: frame.body, sent_at: frame.sent_at, conn: this.conn,
      conversation: typeof frame.conversation === "string" ? frame.conversation : null,
      seq: Number.isInteger(frame.seq) ? frame.seq : null,
      message: frame.message ?? id, late: false,
    };
    if (msg.conversation === null || msg.seq === null) {
      this._present(msg);
      return;
    }
    let prev = frame.prev;
    if (!Number.isInteger(prev) || prev < 0 || prev >= msg.seq) prev = msg.seq - 1;
    const fed = this.order.feed(msg.conversation, msg.seq, prev, msg, performance.now() / 1000);
    if (fed.status === "duplicate") {
      if (this.order.isHeld(msg.conversation, msg.seq)) {
        this.pending.delete(id);
        this.stats.duplicates += 1; // a copy of one waiting for its prev
        return;
      }
      // Its seq was shown before, yet its id is not recorded: a listener failed (or the ids
      // were forgotten). Show it again rather than lose it.
      this._release([{ conversation: msg.conversation, seq: msg.seq, item: msg, late: true }]);
      return;
    }
    if (fed.status === "held") this.stats.held += 1;
    this._release(fed.out);
  }

  _release(out) {
    for (const o of out) {
      if (o.skipped) {
        this.stats.gapsSkipped += 1;
        this._emit("gap", { conversation: o.conversation, first: o.first, last: o.last });
      } else {
        if (o.late) this.stats.late += 1;
        this.places.set(o.item.id, [o.conversation, o.seq]);
        this._present(o.late ? { ...o.item, late: true } : o.item);
      }
    }
    clearTimeout(this._orderTimer);
    this._orderTimer = null;
    const deadline = this.order.nextDeadline();
    if (deadline !== null && !this.closing) {
      const wait = Math.max(0, deadline * 1000 - performance.now());
      this._orderTimer = setTimeout(() => {
        this._orderTimer = null;
        this._release(this.order.tick(performance.now() / 1000));
      }, wait + 1);
    }
  }

  _present(msg) {
    const id = msg.id;
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
        this.places.delete(id);
        this.stats.handlerFailures += 1;
        this._emit("handlererror", { id, error: err });
      },
    );
  }
}

// Per-conversation order (the same rules as delivery/client_order.py, whose docstring explains
// them): feed(conversation, seq, prev, item, now) -> {status: "ready"|"held"|"duplicate", out},
// tick(now) -> out, nextDeadline() -> seconds or null. out holds {conversation, seq, item,
// late} to present, in order, and {skipped: true, conversation, first, last} for a gap given
// up on at the bound. Times are seconds on the caller's clock.
export class OrderBuffer {
  constructor(waitS = 2, { maxHeld = 1000, maxHoles = 64, maxEarly = 1024 } = {}) {
    this.waitS = waitS;
    this.maxHeld = maxHeld;
    this.maxHoles = maxHoles;
    this.maxEarly = maxEarly;
    this.convs = new Map();
  }

  lastPresented(conversation) {
    const c = this.convs.get(conversation);
    return c ? c.last : null;
  }

  isHeld(conversation, seq) {
    const c = this.convs.get(conversation);
    return !!c && c.held.has(seq);
  }

  heldCount() {
    let n = 0;
    for (const c of this.convs.values()) n += c.held.size;
    return n;
  }

  nextDeadline() {
    let best = null;
    for (const c of this.convs.values()) {
      for (const h of c.held.values()) if (best === null || h.due < best) best = h.due;
    }
    return best;
  }

  resume(conversation, lastSeq) {
    const c = this.convs.get(conversation);
    if (!c) this.convs.set(conversation, OrderBuffer._conv(lastSeq, lastSeq));
    else if (lastSeq > c.last && c.held.size === 0) c.last = lastSeq;
  }

  static _conv(last, floor) {
    return { last, floor, holes: [], early: new Set(), held: new Map() };
  }

  feed(conversation, seq, prev, item, now) {
    let c = this.convs.get(conversation);
    if (!c) { // nothing shown yet: it starts before seq 1
      c = OrderBuffer._conv(0, 0);
      this.convs.set(conversation, c);
    }
    if (seq <= c.last) {
      if (seq <= c.floor) {
        if (c.early.has(seq)) return { status: "duplicate", out: [] };
        c.early.add(seq);
        if (c.early.size > this.maxEarly) c.early.delete(c.early.values().next().value);
        return { status: "ready", out: [{ conversation, seq, item, late: true }] };
      }
      if (takeFromHoles(c.holes, seq)) {
        return { status: "ready", out: [{ conversation, seq, item, late: true }] };
      }
      return { status: "duplicate", out: [] };
    }
    if (c.held.has(seq)) return { status: "duplicate", out: [] };
    if (prev <= c.last) {
      const out = [{ conversation, seq, item, late: false }];
      c.last = seq;
      this._drain(conversation, c, out);
      return { status: "ready", out };
    }
    c.held.set(seq, { prev, item, due: now + this.waitS });
    const out = [];
    if (c.held.size > this.maxHeld) this._releaseThrough(conversation, c, Math.min(...c.held.keys()), out);
    return { status: "held", out };
  }

  tick(now) {
    const out = [];
    for (const [name, c] of this.convs) {
      let top = null;
      for (const [seq, h] of c.held) if (h.due <= now && (top === null || seq > top)) top = seq;
      if (top !== null) this._releaseThrough(name, c, top, out);
    }
    return out;
  }

  _releaseThrough(name, c, top, out) {
    const due = [...c.held.keys()].filter((s) => s <= top).sort((a, b) => a - b);
    for (const seq of due) {
      const { prev, item } = c.held.get(seq);
      c.held.delete(seq);
      if (seq <= c.last) {
        out.push({ conversation: name, seq, item, late: true });
        continue;
      }
      if (prev > c.last) {
        out.push({ skipped: true, conversation: name, first: c.last + 1, last: seq - 1 });
        c.holes.push([c.last + 1, seq - 1]);
        if (c.holes.length > this.maxHoles) c.floor = Math.max(c.floor, c.holes.shift()[1]);
      }
      out.push({ conversation: name, seq, item, late: false });
      c.last = seq;
    }
    this._drain(name, c, out);
  }

  _drain(name, c, out) {
    // Only the lowest held seq can follow on: any later one's prev is at least that seq.
    while (c.held.size > 0) {
      const seq = Math.min(...c.held.keys());
      const { prev, item } = c.held.get(seq);
      if (prev > c.last) return;
      c.held.delete(seq);
      if (seq <= c.last) {
        out.push({ conversation: name, seq, item, late: true });
        continue;
      }
      c.last = seq;
      out.push({ conversation: name, seq, item, late: false });
    }
  }
}

// If seq lies in a skipped range, take it out of the range (splitting it) and say so.
function takeFromHoles(holes, seq) {
  const i = holes.findIndex(([first, last]) => first <= seq && seq <= last);
  if (i < 0) return false;
  const [first, last] = holes[i];
  const parts = [[first, seq - 1], [seq + 1, last]].filter(([a, b]) => a <= b);
  holes.splice(i, 1, ...parts);
  return true;
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

// The highest seq shown per conversation for one user, in a Storage under
// "PREFIX/USER" (a JSON object; the most recently marked maxConversations), so that after a
// reload a conversation's order continues from there instead of waiting for what was shown.
export class OrderMarks {
  constructor(user, options = {}) {
    const { storage = usableLocalStorage(), prefix = "delivery.order.v1",
      maxConversations = 1000 } = options;
    this.storage = storage ?? memoryStorage();
    this.key = `${prefix}/${encodeURIComponent(user)}`;
    this.max = maxConversations;
    this.seqs = new Map();
    try {
      const saved = JSON.parse(this.storage.getItem(this.key) ?? "[]");
      if (Array.isArray(saved)) {
        for (const [c, n] of saved) if (typeof c === "string" && Number.isInteger(n)) this.seqs.set(c, n);
      }
    } catch (err) {
      // unreadable: start empty (the first message of each conversation may wait)
    }
  }

  entries() {
    return [...this.seqs];
  }

  mark(conversation, seq) {
    const best = Math.max(seq, this.seqs.get(conversation) ?? seq);
    this.seqs.delete(conversation);
    this.seqs.set(conversation, best);
    while (this.seqs.size > this.max) this.seqs.delete(this.seqs.keys().next().value);
    try {
      this.storage.setItem(this.key, JSON.stringify([...this.seqs]));
    } catch (err) {
      this.storage = memoryStorage(); // full or gone: keep going in memory
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
