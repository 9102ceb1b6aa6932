// Two users with two devices each, through the official socket.io-client: send, receive,
// history, typing, read receipts, reconnect + sync, and an old-style client without acks.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { register, startServer } from "./server.mjs";

let server;
let alice;
let bob;
const sockets = [];

function connect(token) {
  const s = io(server.base, { auth: { token }, transports: ["websocket"], reconnection: false, forceNew: true });
  sockets.push(s);
  return new Promise((resolve, reject) => {
    s.once("connect", () => resolve(s));
    s.once("connect_error", reject);
  });
}

/** Resolves with the next `event` on `socket`, or rejects after `ms`. */
function next(socket, event, ms = 3000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    socket.once(event, (payload) => {
      clearTimeout(timer);
      resolve(payload);
    });
  });
}

/** Collects every `event` on `socket` into an array. */
function collect(socket, event) {
  const seen = [];
  socket.on(event, (p) => seen.push(p));
  return seen;
}

const settle = (ms = 200) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  server = await startServer();
  const suffix = Math.random().toString(16).slice(2, 8);
  alice = await register(server.base, `alice_${suffix}`);
  bob = await register(server.base, `bob_${suffix}`);
});

after(async () => {
  for (const s of sockets) s.disconnect();
  const code = await server.stop();
  assert.equal(code, 0, "SIGTERM exits 0");
});

test("a refused handshake gets connect_error with a reason", async () => {
  const s = io(server.base, { auth: { token: "not-a-token" }, transports: ["websocket"], reconnection: false, forceNew: true });
  sockets.push(s);
  const err = await next(s, "connect_error");
  // The code leads the message: `unauthorized` (log in again) vs `token_expired` (refresh).
  assert.match(err.message, /^unauthorized: invalid token/);
});

test("send, receive on every device, history, typing, read receipts", async () => {
  const [a1, a2, b1, b2] = await Promise.all([connect(alice.token), connect(alice.token), connect(bob.token), connect(bob.token)]);
  const b1Got = collect(b1, "receive_message");
  const b2Got = collect(b2, "receive_message");
  const a1Sent = collect(a1, "message_sent");
  const a2Sent = collect(a2, "message_sent");

  const ack = await a1.timeout(3000).emitWithAck("send_message", { receiverId: bob.user.id, message: "hi bob", clientMsgId: "e2e-1" });
  assert.equal(ack.ok, true);
  assert.equal(ack.message.message, "hi bob");
  assert.equal(ack.message.senderId, alice.user.id);
  assert.match(ack.message._id, /^[0-9a-f]{24}$/);
  await settle();
  for (const got of [b1Got, b2Got, a1Sent, a2Sent]) {
    assert.equal(got.length, 1);
    assert.equal(got[0]._id, ack.message._id);
  }

  // The same clientMsgId again: the same message, not delivered twice.
  const again = await a2.timeout(3000).emitWithAck("send_message", { receiverId: bob.user.id, message: "hi bob", clientMsgId: "e2e-1" });
  assert.equal(again.ok, true);
  assert.equal(again.message._id, ack.message._id);
  await settle();
  assert.equal(b1Got.length, 1);

  const reply = await b2.timeout(3000).emitWithAck("send_message", { receiverId: alice.user.id, message: "hello alice" });
  assert.equal(reply.ok, true);

  const history = next(b1, "chat_history");
  b1.emit("fetch_history", { withUser: alice.user.id });
  const messages = await history;
  assert.deepEqual(messages.map((m) => m.message), ["hi bob", "hello alice"]);

  const typing = next(b1, "typing");
  a1.emit("typing", { to: bob.user.id, isTyping: true });
  assert.deepEqual(await typing, { from: alice.user.id, isTyping: true });

  const readByBob = next(a2, "messages_read");
  const readEcho = next(b2, "messages_read");
  const readAck = await b1.timeout(3000).emitWithAck("mark_read", { withUser: alice.user.id, upTo: ack.message._id });
  assert.equal(readAck.ok, true);
  const receipt = await readByBob;
  assert.equal(receipt.by, bob.user.id);
  assert.equal(receipt.withUser, alice.user.id);
  assert.equal(receipt.upTo, ack.message._id);
  assert.equal((await readEcho).upTo, ack.message._id);

  const bad = await a1.timeout(3000).emitWithAck("send_message", { receiverId: bob.user.id, message: "" });
  assert.equal(bad.ok, false);
  assert.equal(bad.error.code, "validation_failed");
  // The socket still works after a bad event.
  const ok = await a1.timeout(3000).emitWithAck("send_message", { receiverId: bob.user.id, message: "still here" });
  assert.equal(ok.ok, true);
  for (const s of [a1, a2, b1, b2]) s.disconnect();
});

test("a device that reconnects catches up with sync, with no gap", async () => {
  const a = await connect(alice.token);
  let b = await connect(bob.token);
  const first = await a.timeout(3000).emitWithAck("send_message", { receiverId: bob.user.id, message: "before the gap" });
  await settle();
  b.disconnect();
  const missed = [];
  for (let i = 0; i < 5; i++) {
    const r = await a.timeout(3000).emitWithAck("send_message", { receiverId: bob.user.id, message: `missed ${i}` });
    missed.push(r.message._id);
  }
  b = await connect(bob.token);
  const synced = await b.timeout(3000).emitWithAck("sync", { after: first.message._id });
  assert.equal(synced.ok, true);
  assert.equal(synced.hasMore, false);
  assert.deepEqual(synced.messages.map((m) => m._id), missed);
  const paged = await b.timeout(3000).emitWithAck("sync", { after: first.message._id, limit: 2 });
  assert.equal(paged.hasMore, true);
  assert.deepEqual(paged.messages.map((m) => m._id), missed.slice(0, 2));
  // No payload at all (only the callback): from the beginning.
  const all = await b.timeout(3000).emitWithAck("sync");
  assert.equal(all.ok, true, JSON.stringify(all));
  assert.deepEqual(all.messages.map((m) => m._id).slice(-6), [first.message._id, ...missed]);
  a.disconnect();
  b.disconnect();
});

test("an old-style client that never uses acks", async () => {
  const a = await connect(alice.token);
  const b = await connect(bob.token);
  const sent = next(a, "message_sent");
  const received = next(b, "receive_message");
  a.emit("send_message", { receiverId: bob.user.id, message: "old style" });
  const [s, r] = await Promise.all([sent, received]);
  assert.equal(s._id, r._id);
  assert.equal(r.message, "old style");

  const history = next(a, "chat_history");
  a.emit("fetch_history", { withUser: bob.user.id });
  const h = await history;
  assert.equal(h.at(-1).message, "old style");

  const error = next(a, "error");
  a.emit("send_message", { receiverId: bob.user.id });
  const e = await error;
  assert.equal(e.code, "validation_failed");
  assert.match(e.message, /message/);
  a.disconnect();
  b.disconnect();
});

test("the default transport (long-polling, then upgrade) works too", async () => {
  const a = io(server.base, { auth: { token: alice.token }, reconnection: false, forceNew: true });
  const b = io(server.base, { auth: { token: bob.token }, transports: ["polling"], reconnection: false, forceNew: true });
  sockets.push(a, b);
  await Promise.all([next(a, "connect"), next(b, "connect")]);
  const received = next(b, "receive_message");
  const ack = await a.timeout(3000).emitWithAck("send_message", { receiverId: bob.user.id, message: "over polling" });
  assert.equal(ack.ok, true);
  assert.equal((await received)._id, ack.message._id);
  a.disconnect();
  b.disconnect();
});
