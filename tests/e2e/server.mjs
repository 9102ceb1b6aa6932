// Starts the real confab binary on an ephemeral port with a temporary data directory.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { createInterface } from "node:readline";

/** Starts a server; `extraEnv` adds settings (`CONFAB_AUTH__JWT__TTL_SECS`, ...). */
export async function startServer(extraEnv = {}) {
  const bin = process.env.CONFAB_BIN;
  if (!bin) throw new Error("CONFAB_BIN must point at the confab binary");
  const dir = mkdtempSync(join(tmpdir(), "confab-e2e-"));
  const env = { ...process.env };
  const storage = env.CONFAB_TEST_STORAGE || "sqlite";
  const mongoUri = env.CONFAB_TEST_MONGO_URI;
  for (const k of Object.keys(env)) {
    if (k.startsWith("CONFAB_") || ["PORT", "JWT_SECRET", "NODE_ENV", "MONGO_URI", "REDIS_URL"].includes(k)) delete env[k];
  }
  Object.assign(env, {
    CONFAB_SERVER__HOST: "127.0.0.1",
    CONFAB_SERVER__PORT: "0",
    CONFAB_STORAGE__SQLITE__PATH: join(dir, "confab.db"),
  });
  Object.assign(env, extraEnv);
  if (storage === "mongodb") {
    // CONFAB_TEST_STORAGE=mongodb: a database of its own on the server tests/run.sh started.
    if (!mongoUri) throw new Error("CONFAB_TEST_STORAGE=mongodb needs CONFAB_TEST_MONGO_URI");
    Object.assign(env, {
      CONFAB_STORAGE__BACKEND: "mongodb",
      CONFAB_STORAGE__MONGODB__URI: mongoUri,
      CONFAB_STORAGE__MONGODB__DATABASE: `confab_e2e_${basename(dir).replace(/[^A-Za-z0-9]/g, "_")}`,
    });
  } else if (storage !== "sqlite") {
    throw new Error(`CONFAB_TEST_STORAGE=${storage}: expected sqlite or mongodb`);
  }
  const child = spawn(bin, ["serve", "--log-format", "json"], { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"] });
  const logs = [];
  child.stderr.on("data", (d) => logs.push(String(d)));
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no listening line:\n" + logs.join(""))), 20000);
    createInterface({ input: child.stdout }).on("line", (line) => {
      logs.push(line);
      if (process.env.TEST_LOG) console.error("[server]", line);
      try {
        const v = JSON.parse(line);
        if (v.fields?.message === "listening") {
          clearTimeout(timer);
          resolve(v.fields.addr);
        }
      } catch {
        // not a JSON log line
      }
    });
    child.on("exit", (code) => reject(new Error(`confab exited with ${code}:\n${logs.join("\n")}`)));
  });
  const base = `http://${addr}`;
  return {
    base,
    async stop() {
      const exited = new Promise((r) => child.on("exit", (code) => r(code)));
      child.kill("SIGTERM");
      const code = await exited;
      rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}

export async function register(base, username) {
  const res = await fetch(`${base}/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password: "correct horse battery" }),
  });
  if (res.status !== 201) throw new Error(`register ${username}: ${res.status} ${await res.text()}`);
  return res.json();
}
