// Drives graphql-ws's own client (over the `ws` package) against a server
// that authenticates with the graphql-transport-ws preset and guards the
// socket's lifetime. Usage:
//   node run.mjs <ws URL of the graphql endpoint> <HTTP base URL serving GET /token?ttl=SECS>
// The server streams `{"data":{"count":i}}` for i in 1..=variables.to and then
// completes. Prints one line per check and exits non-zero if any fails.
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [wsUrl, httpBase] = process.argv.slice(2);
if (!wsUrl || !httpBase) {
  console.error("usage: node run.mjs <ws URL> <HTTP base URL>");
  process.exit(2);
}

// Each subscription, reconnects included, must end within this.
const SUBSCRIPTION_TIMEOUT_MS = 45_000;
// The whole run must end within this, whatever hangs.
const RUN_TIMEOUT_MS = 240_000;
const LONG_TTL_SECS = 600;

const watchdog = setTimeout(() => {
  console.log(`FAIL run: did not finish within ${RUN_TIMEOUT_MS} ms`);
  process.exit(1);
}, RUN_TIMEOUT_MS);
watchdog.unref();

let failures = 0;
function check(name, ok, detail) {
  console.log(`${ok ? "PASS" : "FAIL"} ${name}${ok ? "" : ": " + JSON.stringify(detail)}`);
  if (!ok) failures += 1;
}

function timeout(ms, what) {
  let timer;
  const promise = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no outcome within ${ms} ms`)), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

async function withTimeout(promise, ms, what) {
  const limit = timeout(ms, what);
  try {
    return await Promise.race([promise, limit.promise]);
  } finally {
    limit.cancel();
  }
}

/** A fresh HS256 token for alice, living `ttl` seconds, from the server. */
async function freshToken(ttl) {
  const response = await fetch(`${httpBase}/token?ttl=${ttl}`, { signal: AbortSignal.timeout(10_000) });
  if (!response.ok) throw new Error(`GET /token answered ${response.status}`);
  return (await response.text()).trim();
}

function describe(error) {
  if (error && typeof error === "object" && "code" in error) {
    return { close: error.code, reason: error.reason };
  }
  if (Array.isArray(error)) return { graphqlErrors: error };
  return { error: String((error && error.stack) || error) };
}

function oneTo(n) {
  return Array.from({ length: n }, (_, i) => i + 1);
}

function sameValues(a, b) {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * One subscription of `to` values with a fresh client made with `options`,
 * run until it completes, errors or times out. Returns what the client saw:
 * the values in order, every close (code, reason, values received before
 * it), and how it ended.
 */
async function subscription(to, options) {
  const values = [];
  const closes = [];
  const client = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    ...options,
    on: {
      closed: (event) => closes.push({ code: event.code, reason: event.reason, afterValues: values.length }),
    },
  });
  const ended = new Promise((resolve) => {
    client.subscribe(
      { query: "subscription { count }", variables: { to } },
      {
        next: (result) => values.push(result && result.data ? result.data.count : result),
        error: (error) => resolve({ completed: false, error: describe(error) }),
        complete: () => resolve({ completed: true }),
      },
    );
  });
  let outcome;
  try {
    outcome = await withTimeout(ended, SUBSCRIPTION_TIMEOUT_MS, "subscription");
  } catch (error) {
    outcome = { completed: false, error: describe(error) };
  }
  try {
    await withTimeout(client.dispose(), 5_000, "dispose");
  } catch {
    client.terminate();
  }
  return { ...outcome, values, closes };
}

async function scenario(name, body) {
  try {
    await body();
  } catch (error) {
    check(name, false, describe(error));
  }
}

const retryQuickly = {
  retryAttempts: 3,
  retryWait: () => new Promise((resolve) => setTimeout(resolve, 100)),
};

// a. A valid token in connectionParams.token.
await scenario("token in connectionParams", async () => {
  const token = await freshToken(LONG_TTL_SECS);
  const seen = await subscription(5, { connectionParams: { token } });
  check("token in connectionParams: all values arrive and the subscription completes",
    seen.completed && sameValues(seen.values, oneTo(5)), seen);
});

// b. A refused token, then a fresh one on the client's own reconnect.
await scenario("refused token then a fresh one", async () => {
  const sent = [];
  const seen = await subscription(5, {
    ...retryQuickly,
    connectionParams: async () => {
      const token = sent.length === 0 ? "not-a-jwt" : await freshToken(LONG_TTL_SECS);
      sent.push(token === "not-a-jwt" ? "garbage" : "fresh");
      return { token };
    },
  });
  const refusal = seen.closes[0];
  check("refused token: the refusal closes with 4403 (a code graphql-ws retries)",
    refusal !== undefined && refusal.code === 4403 && refusal.afterValues === 0, { sent, ...seen });
  check("refused token: the client reconnects with a fresh token and the subscription completes",
    seen.completed && sent.length === 2 && sameValues(seen.values, oneTo(5)), { sent, ...seen });
});

// c. The credential expires mid-stream; the client reconnects with a fresh
// one and re-subscribes by itself.
await scenario("expiry mid-stream", async () => {
  const ttls = [];
  const seen = await subscription(30, {
    ...retryQuickly,
    connectionParams: async () => {
      // The first token lives 2–3 s (exp is whole seconds); the stream of
      // 30 values, 200 ms apart, outlives it.
      const ttl = ttls.length === 0 ? 3 : LONG_TTL_SECS;
      ttls.push(ttl);
      return { token: await freshToken(ttl) };
    },
  });
  const expiry = seen.closes.find((close) => close.code === 4403);
  check("expiry: the server closes the live socket with 4403 when the token expires",
    expiry !== undefined && expiry.afterValues > 0 && expiry.afterValues < 30, { ttls, ...seen });
  check("expiry: after reconnecting with a fresh token values keep arriving until complete",
    expiry !== undefined && seen.completed && ttls.length >= 2
      && seen.values.length > expiry.afterValues && seen.values[seen.values.length - 1] === 30,
    { ttls, ...seen });
});

// d. The other payload shapes the preset reads.
await scenario("Authorization in connectionParams", async () => {
  const token = await freshToken(LONG_TTL_SECS);
  const seen = await subscription(3, { connectionParams: { Authorization: `Bearer ${token}` } });
  check("connectionParams.Authorization = 'Bearer <jwt>': acknowledged, the subscription completes",
    seen.completed && sameValues(seen.values, oneTo(3)), seen);
});
await scenario("headers.Authorization in connectionParams", async () => {
  const token = await freshToken(LONG_TTL_SECS);
  const seen = await subscription(3, { connectionParams: { headers: { Authorization: `Bearer ${token}` } } });
  check("connectionParams.headers.Authorization = 'Bearer <jwt>': acknowledged, the subscription completes",
    seen.completed && sameValues(seen.values, oneTo(3)), seen);
});

console.log(failures === 0 ? "all graphql-ws checks passed" : `${failures} graphql-ws check(s) failed`);
process.exit(failures === 0 ? 0 : 1);
