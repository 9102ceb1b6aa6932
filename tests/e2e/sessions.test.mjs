// Session lifecycle with the official socket.io-client: a socket lives as long as its
// credential. Logout ends it with `session_ended`; a client that renews its token in
// time (`refresh_token`) stays connected across several lifetimes of a short-lived
// token, and reconnects with its current token (`auth` as a callback: the client reuses
// a static `auth` object on every reconnect).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { register, startServer } from "./server.mjs";

// JWT times are whole seconds: a token lives between TTL_SECS - 1 and TTL_SECS.
const TTL_SECS = 4;
let server;
const sockets = [];

before(async () => {
  server = await startServer({ CONFAB_AUTH__JWT__TTL_SECS: String(TTL_SECS), CONFAB_AUTH__JWT__LEEWAY_SECS: "0" });
});

after(async () => {
  for (const s of sockets) s.disconnect();
  await server.stop();
});

const name = (p) => `${p}_${Math.random().toString(16).slice(2, 8)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function once(socket, event, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    socket.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

test("logout ends the socket with session_ended, and the client does not come back", async () => {
  const user = await register(server.base, name("out"));
  const s = io(server.base, { auth: { token: user.token }, transports: ["websocket"], forceNew: true });
  sockets.push(s);
  await once(s, "connect", 3000);
  const ended = once(s, "session_ended", 2000);
  const gone = once(s, "disconnect", 2000);
  const res = await fetch(`${server.base}/auth/logout`, { method: "POST", headers: { authorization: `Bearer ${user.token}` } });
  assert.equal(res.status, 204);
  const [why] = await ended;
  assert.equal(why.code, "logged_out");
  const [reason] = await gone;
  // A server-side disconnect: socket.io-client does not reconnect on its own.
  assert.equal(reason, "io server disconnect");
});

test("a client that refreshes in time outlives two lifetimes of its token and reconnects with the current one", async () => {
  const first = await register(server.base, name("live"));
  let current = first.token;
  let refreshToken = first.refreshToken;
  const s = io(server.base, {
    // A callback: asked again at every (re)connect, so a reconnect presents the token
    // the client holds now, not the one it started with.
    auth: (cb) => cb({ token: current }),
    transports: ["websocket"],
    forceNew: true,
  });
  sockets.push(s);
  await once(s, "connect", 3000);
  let endedEarly = null;
  s.on("session_ended", (p) => (endedEarly = p));

  // Renew halfway through the shortest lifetime a token can have, for over two lifetimes.
  const started = Date.now();
  while (Date.now() - started < 2.3 * TTL_SECS * 1000) {
    await sleep((TTL_SECS - 1) * 500);
    // POST /auth/refresh spends the refresh token and answers a new pair.
    const res = await fetch(`${server.base}/auth/refresh`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refreshToken }),
    });
    assert.equal(res.status, 200);
    const pair = await res.json();
    assert.notEqual(pair.refreshToken, refreshToken, "refresh tokens rotate");
    ({ token: current, refreshToken } = pair);
    const ack = await s.timeout(3000).emitWithAck("refresh_token", { token: current });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    assert.ok(ack.exp * 1000 > Date.now(), "exp is in the future (unix seconds)");
  }
  assert.equal(endedEarly, null, "never ended while refreshed in time");
  assert.ok(s.connected, "still connected after more than two token lifetimes");

  // The transport drops; the client reconnects by itself with its current token.
  const back = once(s, "connect", 5000);
  s.io.engine.close();
  await back;
  const synced = await s.timeout(3000).emitWithAck("sync", { limit: 1 });
  assert.equal(synced.ok, true, JSON.stringify(synced));
});
