// The stream client rule (stream-client.mjs) with the official socket.io-client: a
// receiver whose connection drops while two senders send keeps every message exactly
// once and in stream order, after it reconnects on its own.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { register, startServer } from "./server.mjs";
import { followStream } from "./stream-client.mjs";

let server;
const sockets = [];

before(async () => {
  server = await startServer({
    CONFAB_RATELIMIT__ENABLED: "false",
    CONFAB_AUTH__PASSWORD__ARGON2__MEMORY_KIB: "1024",
    CONFAB_AUTH__PASSWORD__ARGON2__ITERATIONS: "1",
  });
});

after(async () => {
  for (const s of sockets) s.disconnect();
  await server?.stop();
});

function socket(token, options = {}) {
  const s = io(server.base, { auth: { token }, transports: ["websocket"], forceNew: true, ...options });
  sockets.push(s);
  return s;
}

const connected = (s) => (s.connected ? Promise.resolve() : new Promise((r) => s.once("connect", r)));

async function waitFor(what, check, ms = 15000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("a receiver whose connection drops mid-stream ends up with every message once, in order", async () => {
  const tag = Date.now().toString(36);
  const [r, a, b] = await Promise.all(["r", "a", "b"].map((n) => register(server.base, `st_${n}_${tag}`)));
  const got = [];
  const receiver = socket(r.token, { reconnectionDelay: 50, reconnectionDelayMax: 200 });
  const stream = followStream(receiver, { onMessage: (m) => got.push(m) });
  const senders = [socket(a.token), socket(b.token)];
  await Promise.all([receiver, ...senders].map(connected));

  const N = 150;
  const send = async (s, who) => {
    for (let i = 0; i < N; i++) {
      const ack = await s.timeout(10000).emitWithAck("send_message", { receiverId: r.user.id, message: `${who} ${i}` });
      assert.equal(ack.ok, true, JSON.stringify(ack));
      // Halfway, the receiver's connection drops (as a network would): it reconnects by
      // itself and the helper syncs what it missed.
      if (who === "a" && i === N / 2) receiver.io.engine.close();
    }
  };
  await Promise.all([send(senders[0], "a"), send(senders[1], "b")]);
  await waitFor(`all ${2 * N} messages`, () => stream.last === 2 * N).catch((e) => {
    throw new Error(`${e.message}: last ${stream.last}, got ${got.length}, connected ${receiver.connected}`);
  });

  const positions = got.map((m) => m.pos);
  assert.deepEqual(
    positions,
    Array.from({ length: 2 * N }, (_, i) => i + 1),
    "every position once, in order",
  );
  for (const who of ["a", "b"]) {
    const texts = got.filter((m) => m.message.startsWith(`${who} `)).map((m) => m.message);
    assert.deepEqual(texts, Array.from({ length: N }, (_, i) => `${who} ${i}`), `${who}'s messages in send order`);
  }
});
