// A chat backend and a client written in Node 20, with no npm dependency: mints an HS256 JWT
// itself (node:crypto), connects to a gateway as the recipient (global WebSocket, Node 20
// needs --experimental-websocket), sends over POST /v1/messages with a server key, checks the
// answered id is the documented uuid5, receives the message, acks it and prints one JSON line.
// Run by tests/e2e/test_foreign_producers.py.
import { createHash, createHmac } from "node:crypto";

const { API_URL, API_KEY, WS_URL, TOKEN_SECRET, TOKEN_KID, SENDER, RECIPIENT } = process.env;

const b64url = (data) => Buffer.from(data).toString("base64url");

function mintJwt(sub, secret, kid, ttlSeconds) {
  const header = { alg: "HS256", typ: "JWT", ...(kid ? { kid } : {}) };
  const now = Math.floor(Date.now() / 1000);
  const payload = { sub, iat: now, exp: now + ttlSeconds };
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  const signature = createHmac("sha256", secret).update(signingInput).digest("base64url");
  return `${signingInput}.${signature}`;
}

// The documented message id: uuid5(namespace, sender + "\0" + client_msg_id) (RFC 4122).
const NAMESPACE = "6f1c2d8e-5a4b-4c3d-9e8f-7a6b5c4d3e2f";

function uuid5(namespace, name) {
  const ns = Buffer.from(namespace.replaceAll("-", ""), "hex");
  const hash = createHash("sha1").update(ns).update(Buffer.from(name, "utf8")).digest();
  hash[6] = (hash[6] & 0x0f) | 0x50;
  hash[8] = (hash[8] & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function fail(message) {
  console.error(message);
  process.exit(1);
}

const timer = setTimeout(() => fail("timed out"), 30000);
const ws = new WebSocket(WS_URL);
let msgId = null;
let done = false;
const early = [];

ws.addEventListener("error", () => fail("websocket error"));
ws.addEventListener("close", (ev) => {
  if (!done) fail(`closed: ${ev.code} ${ev.reason}`);
  process.exit(0);
});
ws.addEventListener("open", () => {
  ws.send(JSON.stringify({ type: "hello", token: mintJwt(RECIPIENT, TOKEN_SECRET, TOKEN_KID, 300) }));
});
ws.addEventListener("message", async (ev) => {
  const frame = JSON.parse(ev.data);
  if (frame.type === "welcome") {
    const res = await fetch(`${API_URL}/v1/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${API_KEY}` },
      body: JSON.stringify({
        sender: SENDER, recipient: RECIPIENT, body: { text: "hello from node" },
        client_msg_id: `node-${RECIPIENT}`,
      }),
    });
    if (res.status !== 202) fail(`POST answered ${res.status}: ${await res.text()}`);
    msgId = (await res.json()).id;
    const derived = uuid5(NAMESPACE, `${SENDER}\0node-${RECIPIENT}`);
    if (msgId !== derived) fail(`id ${msgId} is not the documented uuid5 ${derived}`);
    for (const f of early) finish(f);
  } else if (frame.type === "message") {
    if (msgId === null) early.push(frame);
    else finish(frame);
  } else if (frame.type === "error") {
    fail(`error frame: ${ev.data}`);
  }
});

function finish(frame) {
  ws.send(JSON.stringify({ type: "ack", id: frame.id }));
  if (frame.id !== msgId) return;
  console.log(JSON.stringify({ id: frame.id, from: frame.from, body: frame.body }));
  clearTimeout(timer);
  done = true;
  ws.close(1000); // after the ack: frames leave in order

}
