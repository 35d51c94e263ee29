// A chat backend and a client written in Node 20, with no npm dependency: mints an HS256 JWT
// itself (node:crypto), connects to a gateway as the recipient (global WebSocket, Node 20
// needs --experimental-websocket), sends over POST /v1/messages with a server key, receives
// the message, acks it and prints one JSON line. Run by tests/e2e/test_foreign_producers.py.
import { createHmac } from "node:crypto";

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
