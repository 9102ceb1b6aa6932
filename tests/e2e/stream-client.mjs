// The client rule for Confab's per-user streams (docs/chat.md "The client rule"), on top
// of the official socket.io-client. Every message shown to a user carries `pos`, its
// position in that user's stream. Keep `last`, the highest contiguous position held:
// apply `pos === last + 1`, ignore `pos <= last` (a duplicate), and on a gap or after any
// (re)connect, `sync {afterPos: last}` until `hasMore` is false. Copy it into an app.

/**
 * Follows the stream of the user on `socket`. `onMessage(m)` is called once per message,
 * in stream order. Returns `{last, catchUp()}`.
 */
export function followStream(socket, { onMessage, last = 0, batch = 500 } = {}) {
  const state = { last, running: null, again: false };

  function apply(m) {
    if (typeof m?.pos !== "number" || m.pos <= state.last) return; // a duplicate
    if (m.pos === state.last + 1) {
      state.last = m.pos;
      onMessage(m);
    } else {
      void catchUp(); // a gap: what is missing comes from sync
    }
  }

  async function syncOnce() {
    for (;;) {
      const from = state.last;
      const r = await socket.timeout(10000).emitWithAck("sync", { afterPos: from, limit: batch });
      if (!r.ok) throw new Error(`sync refused: ${r.error?.code}: ${r.error?.message}`);
      for (const m of r.messages) apply(m);
      if (r.hasMore) continue;
      if (r.headPos < from) {
        state.last = 0; // the server's stream is shorter than ours: start over
        continue;
      }
      // (Live messages applied while the answer travelled may already be past headPos.)
      // Positions up to the head that never committed are skipped.
      state.last = Math.max(state.last, r.headPos);
      return;
    }
  }

  /** Syncs until no gap was seen meanwhile; concurrent calls share one run. */
  function catchUp() {
    state.again = true;
    if (!state.running) {
      state.running = (async () => {
        try {
          while (state.again) {
            state.again = false;
            await syncOnce();
          }
        } finally {
          state.running = null;
        }
      })();
    }
    return state.running;
  }

  socket.on("receive_message", apply);
  socket.on("message_sent", apply);
  socket.on("connect", () => void catchUp().catch(() => {}));
  return {
    get last() {
      return state.last;
    },
    catchUp,
  };
}
