// Drives Debian's chromium headless against a running demo and checks every
// pattern as a page sees it. Usage:
//   node run.mjs <demo base URL> <second-origin page URL> <artifacts dir>
// Prints one line per check and exits non-zero if any fails.
import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [demoUrl, evilUrl, artifacts] = process.argv.slice(2);
if (!demoUrl || !evilUrl || !artifacts) {
  console.error("usage: node run.mjs <demo URL> <second-origin URL> <artifacts dir>");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "tower-ws-auth-chromium-"));
mkdirSync(artifacts, { recursive: true });

let failures = 0;
function check(name, ok, detail) {
  console.log(`${ok ? "PASS" : "FAIL"} ${name}${ok ? "" : ": " + JSON.stringify(detail)}`);
  if (!ok) failures += 1;
}

let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    viewport: { width: 1100, height: 900 },
  });
} catch (error) {
  console.error(`FAIL chromium could not be started from ${executablePath}: ${error.message}`);
  process.exit(1);
}

try {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.log("page error:", e.message));
  await page.goto(demoUrl);

  // Log in through the page's own button: the session cookie is set, the
  // token is kept in page memory.
  await page.fill("#user", "alice");
  await page.click("#login");
  await page.waitForFunction(() => window.demo.state.token !== null);

  // Ticket: welcome via ticket; the same ticket again fails (1006).
  const ticket = await page.evaluate(() => window.demo.ticket());
  const ticketWelcome = ticket.messages[0] && JSON.parse(ticket.messages[0]);
  check("ticket: socket opens with welcome via ticket",
    ticket.opened && ticketWelcome.type === "welcome" && ticketWelcome.via === "ticket" && ticketWelcome.user === "alice", ticket);
  check("ticket: echo works and the page's close is answered (1000)",
    ticket.messages.includes("hello") && ticket.closeCode === 1000, ticket);
  const replay = await page.evaluate(() => window.demo.ticketReplay());
  check("ticket: reusing the ticket fails with 1006", !replay.opened && replay.closeCode === 1006, replay);

  // Cookie: sent automatically by the browser.
  const cookie = await page.evaluate(() => window.demo.cookie());
  const cookieWelcome = cookie.messages[0] && JSON.parse(cookie.messages[0]);
  check("cookie: socket opens with welcome via cookie",
    cookie.opened && cookieWelcome.via === "cookie" && cookieWelcome.user === "alice", cookie);

  // Cross-Site WebSocket Hijacking: a page on another origin opens a socket
  // to the demo. The browser attaches the session cookie; the Origin check
  // refuses the upgrade.
  const evil = await context.newPage();
  await evil.goto(evilUrl);
  const hijack = await evil.evaluate((target) => new Promise((resolve) => {
    const ws = new WebSocket(target);
    const result = { opened: false, closeCode: null };
    ws.onopen = () => { result.opened = true; };
    ws.onclose = (e) => { result.closeCode = e.code; resolve(result); };
    setTimeout(() => resolve(result), 8000);
  }), demoUrl.replace(/^http/, "ws") + "/ws");
  check("cookie: a second origin's socket is refused (CSWSH)", !hijack.opened && hijack.closeCode === 1006, hijack);

  // Subprotocol: the server selects the real protocol, never the token.
  // The session cookie is still in the jar and goes along: the explicit
  // token decides, the ambient cookie does not.
  const sub = await page.evaluate(() => window.demo.subprotocol());
  const subWelcome = sub.messages[0] && JSON.parse(sub.messages[0]);
  check("subprotocol: opens with ws.protocol === 'chat'", sub.opened && sub.protocol === "chat", sub);
  check("subprotocol: welcome via subprotocol, though the cookie was sent too",
    subWelcome && subWelcome.via === "subprotocol", sub);
  const badSub = await page.evaluate(() => window.demo.subprotocol("not-a-token"));
  check("subprotocol: a bad token is refused (1006), not rescued by the valid cookie",
    !badSub.opened && badSub.closeCode === 1006 && badSub.messages.length === 0, badSub);

  // First message: auth_ok then echo; a bad token gets auth_fail and 4001.
  const first = await page.evaluate(() => window.demo.firstMessage());
  check("first message: auth_ok then echo",
    first.messages[0] && JSON.parse(first.messages[0]).type === "auth_ok" && first.messages[1] === "hello", first);
  const bad = await page.evaluate(() => window.demo.firstMessage("not-a-token"));
  check("first message: bad token gets auth_fail and close 4001",
    bad.messages[0] && JSON.parse(bad.messages[0]).type === "auth_fail" && bad.closeCode === 4001, bad);

  // Expiry: a socket whose credential expires is closed with 4002, at the
  // token's `exp` (1 to 2 s away) plus the verifier's 5 s leeway.
  const expiry = await page.evaluate(async () => {
    // credentials: "omit" leaves the jar's long-lived session as it is; the
    // browser sends that cookie along, and the short-lived token decides.
    const res = await fetch("/login", { method: "POST", credentials: "omit", headers: { "content-type": "application/json" },
      body: JSON.stringify({ user: "alice", ttl_secs: 2 }) });
    const { token } = await res.json();
    const started = Date.now();
    const result = await window.demo.idle("expiring", window.demo.wsBase + "/ws", ["bearer." + token, "chat"], 15000);
    result.elapsedMs = Date.now() - started;
    return result;
  });
  const expiryWelcome = expiry.messages[0] && JSON.parse(expiry.messages[0]);
  check("expiry: the server closes the socket with 4002 when the token expires",
    expiry.opened && expiryWelcome.via === "subprotocol" && expiry.closeCode === 4002
      && expiry.elapsedMs >= 1000 && expiry.elapsedMs < 12000, expiry);

  // Logout reaches open sockets: a subprotocol socket and a cookie socket are
  // open; the page clicks "Log out everywhere"; both close with 4003.
  const logout = await page.evaluate(async () => {
    const base = window.demo.wsBase + "/ws";
    const bySubprotocol = window.demo.idle("before logout", base, ["bearer." + window.demo.state.token, "chat"], 10000);
    const byCookie = window.demo.idle("cookie before logout", base, null, 10000);
    await new Promise((r) => setTimeout(r, 700));
    const started = Date.now();
    document.getElementById("logout").click();
    const results = await Promise.all([bySubprotocol, byCookie]);
    return { results, elapsedMs: Date.now() - started };
  });
  check("logout: the page's open sockets close with 4003",
    logout.results.every((r) => r.opened && r.closeCode === 4003), logout);
  const afterLogout = await page.evaluate(() => window.demo.subprotocol());
  check("logout: the old token is refused afterwards (1006)", !afterLogout.opened && afterLogout.closeCode === 1006, afterLogout);
  await page.click("#login");
  await page.waitForFunction(() => document.getElementById("log").textContent.split("logged in as").length > 2);
  const relogged = await page.evaluate(() => window.demo.subprotocol());
  check("logout: a login right after works at once", relogged.opened && relogged.messages.includes("hello"), relogged);

  await page.screenshot({ path: join(artifacts, "demo.png"), fullPage: true });
  console.log(`screenshot: ${join(artifacts, "demo.png")}`);
} catch (error) {
  check("browser run", false, String(error && error.stack || error));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(failures === 0 ? "all browser checks passed" : `${failures} browser check(s) failed`);
process.exit(failures === 0 ? 0 : 1);
