//! Scale benchmark: many concurrent authenticated WebSockets held open on one
//! server, with and without a `LifetimeGuard` (expiry and revocation) around
//! each.
//!
//! The server runs in this process, so its memory and CPU are what is
//! measured: an axum router whose routes all authenticate with
//! `WsAuthLayer::new(Bearer, revocations.enforce(jwt))` (HS256) and echo text
//! messages, each socket with a 4 KiB read buffer and no write buffer. The
//! client fleet runs in a child process (this binary again, with
//! `SCALE_FLEET` set): it connects every socket, 256 at a time, reports on
//! stdout and takes commands on stdin. Client sockets are bound to several
//! loopback source addresses (127.x.y.1, at most 10,000 sockets each) so the
//! ~28,000 ephemeral ports of one address do not cap the count.
//!
//! For each socket count, four fleets, one after the other, each against its
//! own route:
//!
//! | fleet | route | measured |
//! |---|---|---|
//! | plain | authenticated, echo | memory per socket, idle CPU (baselines) |
//! | guarded | authenticated, echo through `LifetimeGuard` + `RevocationWatch` | memory per socket, idle CPU; then one subject's 10 sockets revoked |
//! | deadline | authenticated, echo with a hand-written expiry timer that sends the same 4002 close | memory; closing the sockets that expire (baseline) |
//! | guarded | as above | memory; closing the sockets that expire through the guard |
//!
//! In the expiry fleets `SCALE_EXPIRING` sockets (default 10,000, at most
//! three quarters of the fleet) hold credentials that expire at the same
//! whole second; the others expire in an hour.
//!
//! Memory is the server's RSS (after `malloc_trim`) and the bytes its heap
//! holds (a counting allocator), each per socket.
//!
//! The process's open-file limit bounds how many sockets one process can
//! hold: the bench raises it (`setrlimit`) and, when it cannot be raised far
//! enough, measures the largest count that fits and says so.
//!
//! `cargo bench --bench scale`. Environment: `SCALE_COUNT` (default 100000;
//! a comma-separated list runs each count), `SCALE_ROUNDS` (default 1),
//! `SCALE_IDLE_SECS` (default 10), `SCALE_EXPIRING` (default 10000),
//! `SCALE_INDEX` (default 100000: the revocation is made among this many
//! registered watches, padding the live sockets with registrations that have
//! no socket when the count is smaller), `SCALE_TRACING=1` (a `tracing`
//! subscriber formatting INFO spans and events, as a production server has;
//! none by default).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tower_ws_auth::first_message::{JsonAuth, LifetimeGuard};
use tower_ws_auth::jwt::{JwtClaims, JwtVerifier};
use tower_ws_auth::revocation::{CheckRevoked, RevocationWatch, Revocations};
use tower_ws_auth::source::Bearer;
use tower_ws_auth::{AuthError, AuthErrorKind, Authenticated, WsAuthLayer};

const SECRET: &[u8] = b"benchmark-secret-of-thirty-two-b";
/// The subject revoked among all the others.
const TARGET: &str = "target";
const TARGET_SOCKETS: usize = 10;
/// Descriptors a process needs besides its sockets (stdio, the runtime's
/// epoll and eventfd, the listener, the pipes to the fleet, /proc reads).
const FD_RESERVE: usize = 100;
/// Client sockets per loopback source address: well under the ~28,000
/// ephemeral ports of one address.
const PER_SOURCE: usize = 10_000;
/// Handshakes in flight at once: under the listen backlog.
const CONNECTING: usize = 256;
const READ_BUFFER: usize = 4096;
/// A credential that does not expire during the run.
const HOUR: u64 = 3600;
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

// ---------------------------------------------------------------- common

/// The system allocator, counting the bytes allocated and not yet freed:
/// heap per socket, exact, beside RSS.
struct Counting;

static HEAP: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            HEAP.fetch_add(new_size, Ordering::Relaxed);
            HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap() -> u64 {
    HEAP.load(Ordering::Relaxed) as u64
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: u64,
}

impl JwtClaims for Claims {
    fn subject(&self) -> &str {
        &self.sub
    }

    fn expires_at(&self) -> Option<u64> {
        Some(self.exp)
    }

    fn issued_at(&self) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(self.iat))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock}) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The system-wide monotonic clock: comparable between the two processes.
fn mono_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time this process has used, in nanoseconds.
fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Context switches of this process's threads so far: each park and wake of
/// a runtime thread is one.
fn context_switches() -> u64 {
    // SAFETY: getrusage writes into the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    (usage.ru_nvcsw + usage.ru_nivcsw) as u64
}

/// Resident set size in bytes, from /proc/self/statm.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// Hand the allocator's free pages back to the kernel, so RSS shows what is
/// allocated rather than what the allocator keeps for reuse.
fn release_free_memory() {
    // SAFETY: malloc_trim only releases memory that is already free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raise the open-file limit to `wanted`; the limit in force afterwards, and
/// why it is lower when it is.
fn raise_fd_limit(wanted: u64) -> (u64, Option<String>) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur >= wanted {
            return (limit.rlim_cur, None);
        }
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: wanted.max(limit.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return (wanted, None);
        }
        let refused = std::io::Error::last_os_error();
        let hard = limit.rlim_max;
        let soft = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &soft), 0);
        let why = format!(
            "RLIMIT_NOFILE: raising the hard limit from {hard} to {wanted} was refused ({refused}; \
             it needs CAP_SYS_RESOURCE), so one process can hold at most {hard} descriptors"
        );
        (hard, Some(why))
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("scale: benchmark");
        return;
    }
    if std::env::var_os("SCALE_FLEET").is_some() {
        fleet_main();
        return;
    }
    // Minutes of work and tens of thousands of sockets: only under
    // `cargo bench`, which passes `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale: run with `cargo bench --bench scale`");
        return;
    }
    server_main();
}

// ---------------------------------------------------------------- server

type Verifier = CheckRevoked<JwtVerifier<Claims>>;

#[derive(Clone)]
struct Server {
    verifier: Verifier,
    revocations: Revocations,
    live: Arc<Live>,
}

/// How many sockets the server's handlers hold open; wakes a waiter when the
/// number reaches its target, so waiting costs no polling.
struct Live {
    open: AtomicUsize,
    target: AtomicUsize,
    reached: Notify,
}

/// One open socket, counted until dropped.
struct Open(Arc<Live>);

impl Live {
    fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            target: AtomicUsize::new(usize::MAX),
            reached: Notify::new(),
        }
    }

    fn open(self: &Arc<Self>) -> Open {
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.changed(now);
        Open(self.clone())
    }

    fn changed(&self, now: usize) {
        if now == self.target.load(Ordering::SeqCst) {
            self.reached.notify_one();
        }
    }

    fn count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Wait until exactly `n` sockets are open, at most `within`.
    async fn wait_for(&self, n: usize, within: Duration) -> bool {
        self.target.store(n, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.count() == n {
                return true;
            }
            if tokio::time::timeout_at(deadline, self.reached.notified())
                .await
                .is_err()
            {
                return self.count() == n;
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let now = self.0.open.fetch_sub(1, Ordering::SeqCst) - 1;
        self.0.changed(now);
    }
}

fn small_buffers(upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    upgrade.read_buffer_size(READ_BUFFER).write_buffer_size(0)
}

/// Echo every text message until the socket ends.
async fn echo<S, E>(mut socket: S)
where
    S: Stream<Item = Result<AxumMessage, E>> + Sink<AxumMessage> + Unpin,
{
    while let Some(Ok(message)) = socket.next().await {
        if let AxumMessage::Text(text) = message {
            if socket.send(AxumMessage::Text(text)).await.is_err() {
                break;
            }
        }
    }
}

/// Authenticated, unguarded: the baseline.
async fn plain(
    upgrade: WebSocketUpgrade,
    State(server): State<Server>,
    auth: Authenticated<Claims>,
) -> Response {
    small_buffers(upgrade).on_upgrade(move |socket| plain_socket(socket, server, auth))
}

async fn plain_socket(socket: WebSocket, server: Server, auth: Authenticated<Claims>) {
    let _open = server.live.open();
    // Held for the socket's life, as an application holds who its client is.
    let _auth = auth;
    echo(socket).await;
}

/// Authenticated and guarded: closed at expiry (4002) and on revocation
/// (4003), as the demo's `/ws`.
async fn guarded(
    upgrade: WebSocketUpgrade,
    State(server): State<Server>,
    auth: Authenticated<Claims>,
) -> Response {
    small_buffers(upgrade).on_upgrade(move |socket| guarded_socket(socket, server, auth))
}

async fn guarded_socket(socket: WebSocket, server: Server, auth: Authenticated<Claims>) {
    let _open = server.live.open();
    let watch = server.revocations.watch(&auth.identity);
    let socket = LifetimeGuard::new(
        socket,
        &auth.identity,
        auth.expires_at,
        server.verifier,
        JsonAuth,
    )
    .revocation(watch);
    let _auth = auth;
    echo(socket).await;
}

/// Authenticated, with the expiry written by hand instead of the guard: a
/// timer beside the read, and the same 4002 close when it fires.
async fn deadline(
    upgrade: WebSocketUpgrade,
    State(server): State<Server>,
    auth: Authenticated<Claims>,
) -> Response {
    small_buffers(upgrade).on_upgrade(move |socket| deadline_socket(socket, server, auth))
}

async fn deadline_socket(mut socket: WebSocket, server: Server, auth: Authenticated<Claims>) {
    let _open = server.live.open();
    let remaining = auth.expires_at.map_or(NEVER, |at| {
        at.duration_since(SystemTime::now()).unwrap_or_default()
    });
    let _auth = auth;
    let expiry = tokio::time::sleep(remaining);
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            () = &mut expiry => {
                let expired = AuthError::new(AuthErrorKind::Expired);
                let close = CloseFrame {
                    code: expired.close_code(),
                    reason: expired.body_text().into(),
                };
                let _ = socket.send(AxumMessage::Close(Some(close))).await;
                break;
            }
            message = socket.next() => match message {
                Some(Ok(AxumMessage::Text(text))) => {
                    if socket.send(AxumMessage::Text(text)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
}

/// The size of the future a socket handler returns: what its task holds
/// inline for the socket's life.
fn future_size<F, Fut>(_: F) -> usize
where
    F: FnOnce(WebSocket, Server, Authenticated<Claims>) -> Fut,
{
    std::mem::size_of::<Fut>()
}

fn router(server: Server) -> Router {
    Router::new()
        .route("/plain", get(plain))
        .route("/guarded", get(guarded))
        .route("/deadline", get(deadline))
        .route_layer(WsAuthLayer::new(Bearer, server.verifier.clone()))
        .with_state(server)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Plain,
    Guarded,
    Deadline,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Route::Plain => "/plain",
            Route::Guarded => "/guarded",
            Route::Deadline => "/deadline",
        }
    }
}

/// What a fleet connects: `count` sockets to `route`; the first `targets`
/// as [`TARGET`], the next `expiring` with credentials expiring at `expiry`
/// (Unix seconds).
#[derive(Clone, Copy, Debug)]
struct FleetSpec {
    route: Route,
    count: usize,
    targets: usize,
    expiring: usize,
    expiry: u64,
}

/// The client fleet, in its child process.
struct Fleet {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    connect_ms: f64,
}

impl Fleet {
    async fn spawn(addr: SocketAddr, spec: FleetSpec, source: u8) -> Self {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .env("SCALE_FLEET", addr.to_string())
            .env("SCALE_FLEET_PATH", spec.route.path())
            .env("SCALE_FLEET_COUNT", spec.count.to_string())
            .env("SCALE_FLEET_TARGETS", spec.targets.to_string())
            .env("SCALE_FLEET_EXPIRING", spec.expiring.to_string())
            .env("SCALE_FLEET_EXPIRY", spec.expiry.to_string())
            .env("SCALE_FLEET_SOURCE", source.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut fleet = Self {
            child,
            stdin,
            stdout,
            connect_ms: 0.0,
        };
        let report = fleet.read("CONNECTED", Duration::from_secs(600)).await;
        let failed = report["failed"].as_u64().unwrap();
        assert_eq!(
            failed, 0,
            "{failed} of {} clients could not connect: {}",
            spec.count, report["first_error"]
        );
        fleet.connect_ms = report["ms"].as_f64().unwrap();
        fleet
    }

    async fn read(&mut self, tag: &str, within: Duration) -> Value {
        let line = tokio::time::timeout(within, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("no {tag} from the fleet within {within:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the fleet exited before {tag}"));
        let json = line
            .strip_prefix(tag)
            .unwrap_or_else(|| panic!("expected {tag}, the fleet said: {line}"));
        serde_json::from_str(json.trim()).unwrap()
    }

    async fn ask(&mut self, command: &str) -> Value {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
        self.read("STATUS", Duration::from_secs(120)).await
    }

    /// The fleet exits; the kernel closes its sockets.
    async fn quit(mut self) {
        let _ = self.stdin.write_all(b"QUIT\n").await;
        let _ = self.stdin.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
    }
}

/// Closes the fleet saw, by (class, code): count, first and last (ns on the
/// monotonic clock).
fn closes(status: &Value) -> BTreeMap<(String, u64), (u64, u64, u64)> {
    status["closes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                (
                    c["class"].as_str().unwrap().to_owned(),
                    c["code"].as_u64().unwrap(),
                ),
                (
                    c["n"].as_u64().unwrap(),
                    c["first"].as_u64().unwrap(),
                    c["last"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

struct Bench {
    addr: SocketAddr,
    server: Server,
    idle: Duration,
    expiring: usize,
    index: usize,
    fleets: u8,
}

/// Memory of a fleet held open.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    before: u64,
    held: u64,
    after: u64,
    heap_before: u64,
    heap_held: u64,
    count: usize,
    connect_ms: f64,
}

impl Held {
    /// RSS per socket.
    fn per_socket(&self) -> f64 {
        (self.held as f64 - self.before as f64) / self.count as f64
    }

    /// Heap allocated per socket.
    fn heap_per_socket(&self) -> f64 {
        (self.heap_held as f64 - self.heap_before as f64) / self.count as f64
    }

    fn kept(&self) -> i64 {
        self.after as i64 - self.before as i64
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Idle {
    secs: f64,
    cpu_ms: f64,
    switches: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Expiry {
    closed: usize,
    first_ms: f64,
    last_ms: f64,
    server_done_ms: f64,
    window_ms: f64,
    cpu_ms: f64,
    others_closed: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Revocation {
    index: usize,
    revoke_us: f64,
    first_us: f64,
    last_us: f64,
    closed: u64,
    others_closed: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Round {
    plain: Held,
    guarded: Held,
    deadline: Held,
    guarded_expiring: Held,
    idle_plain: Idle,
    idle_guarded: Idle,
    expiry_deadline: Expiry,
    expiry_guarded: Expiry,
    revocation: Revocation,
}

impl Bench {
    fn next_source(&mut self) -> u8 {
        // A fresh second octet per fleet: the previous fleet's client ports
        // may still be in TIME_WAIT on theirs.
        self.fleets = self.fleets % 250 + 1;
        self.fleets
    }

    /// Connect a fleet and measure the server's memory with it held open.
    async fn hold(&mut self, spec: FleetSpec) -> (Fleet, Held) {
        assert_eq!(
            self.server.live.count(),
            0,
            "a previous fleet is still open"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        release_free_memory();
        let (before, heap_before) = (rss(), heap());
        let source = self.next_source();
        let fleet = Fleet::spawn(self.addr, spec, source).await;
        assert!(
            self.server
                .live
                .wait_for(spec.count, Duration::from_secs(60))
                .await,
            "{} of {} sockets open at the server",
            self.server.live.count(),
            spec.count
        );
        // Let the handshakes' transient buffers go.
        tokio::time::sleep(Duration::from_secs(1)).await;
        release_free_memory();
        let (held, heap_held) = (rss(), heap());
        let connect_ms = fleet.connect_ms;
        (
            fleet,
            Held {
                before,
                held,
                after: 0,
                heap_before,
                heap_held,
                count: spec.count,
                connect_ms,
            },
        )
    }

    async fn release(&self, fleet: Fleet, held: &mut Held) {
        fleet.quit().await;
        assert!(
            self.server.live.wait_for(0, Duration::from_secs(120)).await,
            "{} sockets still open after the fleet exited",
            self.server.live.count()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        release_free_memory();
        held.after = rss();
    }

    async fn idle(&self) -> Idle {
        let (cpu, switches, started) = (process_cpu_ns(), context_switches(), mono_ns());
        tokio::time::sleep(self.idle).await;
        Idle {
            secs: (mono_ns() - started) as f64 / 1e9,
            cpu_ms: (process_cpu_ns() - cpu) as f64 / 1e6,
            switches: context_switches() - switches,
        }
    }

    async fn baseline_fleet(&mut self, count: usize) -> (Held, Idle) {
        let spec = FleetSpec {
            route: Route::Plain,
            count,
            targets: 0,
            expiring: 0,
            expiry: 0,
        };
        let (fleet, mut held) = self.hold(spec).await;
        let idle = self.idle().await;
        self.release(fleet, &mut held).await;
        (held, idle)
    }

    async fn guarded_fleet(&mut self, count: usize) -> (Held, Idle, Revocation) {
        let spec = FleetSpec {
            route: Route::Guarded,
            count,
            targets: TARGET_SOCKETS,
            expiring: 0,
            expiry: 0,
        };
        let (mut fleet, mut held) = self.hold(spec).await;
        let idle = self.idle().await;

        // Registrations without a socket, so the revocation is made among
        // `index` watches even when fewer sockets fit.
        let iat = unix_now();
        let pads: Vec<RevocationWatch> = (count..self.index)
            .map(|i| {
                self.server.revocations.watch(&Claims {
                    sub: format!("pad-{i}"),
                    exp: iat + HOUR,
                    iat,
                })
            })
            .collect();
        let started = mono_ns();
        self.server
            .revocations
            .revoke_subject(TARGET)
            .await
            .unwrap();
        let returned = mono_ns();
        let status = fleet.ask(&format!("WAIT 4003 {TARGET_SOCKETS} 5000")).await;
        let seen = closes(&status);
        let (closed, first, last) = seen
            .get(&("target".to_owned(), 4003))
            .copied()
            .unwrap_or_default();
        // Anything else that closes does so within a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = closes(&fleet.ask("STATUS").await);
        let others_closed = after
            .iter()
            .filter(|((class, code), _)| !(class == "target" && *code == 4003))
            .map(|(_, (n, _, _))| n)
            .sum();
        let revocation = Revocation {
            index: count.max(self.index),
            revoke_us: (returned - started) as f64 / 1e3,
            first_us: first.saturating_sub(started) as f64 / 1e3,
            last_us: last.saturating_sub(started) as f64 / 1e3,
            closed,
            others_closed,
        };
        drop(pads);
        self.release(fleet, &mut held).await;
        (held, idle, revocation)
    }

    /// A fleet of `count` sockets on `route` of which `expiring` expire at
    /// the same second, `margin` after the fleet starts connecting.
    async fn expiry_fleet(
        &mut self,
        route: Route,
        count: usize,
        margin: Duration,
    ) -> (Held, Expiry) {
        // Most of the fleet at small counts; the rest stay open.
        let expiring = self.expiring.min(count * 3 / 4);
        let expiry = unix_now() + margin.as_secs() + 1;
        let spec = FleetSpec {
            route,
            count,
            targets: 0,
            expiring,
            expiry,
        };
        let (mut fleet, mut held) = self.hold(spec).await;
        // The expiry second on the monotonic clock.
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let expiry_mono = mono_ns() + (expiry * 1_000_000_000).saturating_sub(now_ns);
        let lead = Duration::from_millis(500);
        let wait = Duration::from_nanos(expiry_mono.saturating_sub(mono_ns()));
        assert!(
            wait > lead,
            "the fleet took {:.0} ms to connect, past its expiry; raise the margin",
            held.connect_ms
        );
        tokio::time::sleep(wait - lead).await;
        let (cpu, window) = (process_cpu_ns(), mono_ns());
        let done = self
            .server
            .live
            .wait_for(count - expiring, lead + Duration::from_secs(60))
            .await;
        let (cpu_done, done_at) = (process_cpu_ns(), mono_ns());
        assert!(done, "{} sockets open", self.server.live.count());
        let status = fleet.ask(&format!("WAIT 4002 {expiring} 30000")).await;
        let seen = closes(&status);
        let (closed, first, last) = seen
            .get(&("expiring".to_owned(), 4002))
            .copied()
            .unwrap_or_default();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = closes(&fleet.ask("STATUS").await);
        let others_closed = after
            .iter()
            .filter(|((class, code), _)| !(class == "expiring" && *code == 4002))
            .map(|(_, (n, _, _))| n)
            .sum();
        let ms = |at: u64| (at as f64 - expiry_mono as f64) / 1e6;
        let result = Expiry {
            closed: closed as usize,
            first_ms: ms(first),
            last_ms: ms(last),
            server_done_ms: ms(done_at),
            window_ms: (done_at - window) as f64 / 1e6,
            cpu_ms: (cpu_done - cpu) as f64 / 1e6,
            others_closed,
        };
        assert_eq!(
            result.closed, expiring,
            "expected {expiring} closes with 4002"
        );
        self.release(fleet, &mut held).await;
        (held, result)
    }

    async fn round(&mut self, count: usize, round: usize) -> Round {
        let mut r = Round::default();
        // Alternate the order of each pair from round to round, so drift
        // hits both sides alike.
        if round.is_multiple_of(2) {
            (r.plain, r.idle_plain) = self.baseline_fleet(count).await;
            (r.guarded, r.idle_guarded, r.revocation) = self.guarded_fleet(count).await;
        } else {
            (r.guarded, r.idle_guarded, r.revocation) = self.guarded_fleet(count).await;
            (r.plain, r.idle_plain) = self.baseline_fleet(count).await;
        }
        let connect = r.plain.connect_ms.max(r.guarded.connect_ms);
        let margin = Duration::from_millis((connect * 2.0) as u64) + Duration::from_secs(5);
        if round.is_multiple_of(2) {
            (r.deadline, r.expiry_deadline) =
                self.expiry_fleet(Route::Deadline, count, margin).await;
            (r.guarded_expiring, r.expiry_guarded) =
                self.expiry_fleet(Route::Guarded, count, margin).await;
        } else {
            (r.guarded_expiring, r.expiry_guarded) =
                self.expiry_fleet(Route::Guarded, count, margin).await;
            (r.deadline, r.expiry_deadline) =
                self.expiry_fleet(Route::Deadline, count, margin).await;
        }
        r
    }
}

fn print_round(count: usize, round: usize, r: &Round) {
    let kib = |b: f64| b / 1024.0;
    println!("\n## {count} sockets, round {round}");
    println!(
        "memory per socket: RSS (held − before) / count, heap allocated likewise; \
         kept = RSS after − before"
    );
    for (name, h) in [
        ("plain", &r.plain),
        ("guarded", &r.guarded),
        ("deadline", &r.deadline),
        ("guarded (expiry fleet)", &r.guarded_expiring),
    ] {
        println!(
            "  {name:<24} RSS {:>6.0} B ({:.2} KiB), heap {:>6.0} B, kept {:+} KiB, connected in {:.0} ms",
            h.per_socket(),
            kib(h.per_socket()),
            h.heap_per_socket(),
            h.kept() / 1024,
            h.connect_ms
        );
    }
    println!(
        "  guarded − plain: RSS {:+.0} B, heap {:+.0} B; guarded − deadline (expiry fleets): \
         RSS {:+.0} B, heap {:+.0} B",
        r.guarded.per_socket() - r.plain.per_socket(),
        r.guarded.heap_per_socket() - r.plain.heap_per_socket(),
        r.guarded_expiring.per_socket() - r.deadline.per_socket(),
        r.guarded_expiring.heap_per_socket() - r.deadline.heap_per_socket()
    );
    for (name, i) in [("plain", &r.idle_plain), ("guarded", &r.idle_guarded)] {
        println!(
            "idle {name:<8} {:.1} s: server CPU {:.2} ms ({:.3} ms/s), {} context switches",
            i.secs,
            i.cpu_ms,
            i.cpu_ms / i.secs,
            i.switches
        );
    }
    for (name, e) in [
        ("deadline", &r.expiry_deadline),
        ("guarded", &r.expiry_guarded),
    ] {
        println!(
            "expiry {name:<8} {} closed 4002: first +{:.1} ms, last +{:.1} ms at the client, \
             server tasks done +{:.1} ms; server CPU {:.1} ms in {:.0} ms ({:.1} µs/socket); \
             other sockets closed: {}",
            e.closed,
            e.first_ms,
            e.last_ms,
            e.server_done_ms,
            e.cpu_ms,
            e.window_ms,
            e.cpu_ms * 1000.0 / e.closed.max(1) as f64,
            e.others_closed
        );
    }
    let v = &r.revocation;
    println!(
        "revocation among {} watches ({count} live sockets): revoke_subject returned in {:.1} µs; \
         {} closed 4003 at the client +{:.0} µs (first) to +{:.0} µs (last); other sockets closed: {}",
        v.index, v.revoke_us, v.closed, v.first_us, v.last_us, v.others_closed
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn print_summary(results: &[(usize, Vec<Round>)], idle_secs: u64) {
    println!("\n## summary (medians over rounds)\n");
    println!(
        "| sockets | RSS B/socket plain, guarded, deadline | guarded − plain RSS, heap | \
         guarded − deadline RSS, heap | idle CPU plain ms/{idle_secs}s | idle CPU guarded ms/{idle_secs}s | \
         expiry deadline last close ms, CPU ms | expiry guarded last close ms, CPU ms | \
         revocation last 4003 µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (count, rounds) in results {
        let m = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        println!(
            "| {count} | {:.0}, {:.0}, {:.0} | {:+.0}, {:+.0} | {:+.0}, {:+.0} | {:.2} | {:.2} | {:.1}, {:.1} | {:.1}, {:.1} | {:.0} |",
            m(&|r| r.plain.per_socket()),
            m(&|r| r.guarded.per_socket()),
            m(&|r| r.deadline.per_socket()),
            m(&|r| r.guarded.per_socket() - r.plain.per_socket()),
            m(&|r| r.guarded.heap_per_socket() - r.plain.heap_per_socket()),
            m(&|r| r.guarded_expiring.per_socket() - r.deadline.per_socket()),
            m(&|r| r.guarded_expiring.heap_per_socket() - r.deadline.heap_per_socket()),
            m(&|r| r.idle_plain.cpu_ms),
            m(&|r| r.idle_guarded.cpu_ms),
            m(&|r| r.expiry_deadline.last_ms),
            m(&|r| r.expiry_deadline.cpu_ms),
            m(&|r| r.expiry_guarded.last_ms),
            m(&|r| r.expiry_guarded.cpu_ms),
            m(&|r| r.revocation.last_us),
        );
    }
}

fn print_layout() {
    use std::mem::size_of;
    type Guard = LifetimeGuard<WebSocket, AxumMessage, Verifier, JsonAuth>;
    println!(
        "layout (bytes): socket task futures: plain {}, guarded {}, deadline {}; \
         WebSocket {}, LifetimeGuard<WebSocket, ..> {}, of which tokio Sleep {} (boxed), \
         RevocationWatch {}, CheckRevoked<JwtVerifier> {}, tracing::Span {}, \
         axum Message {} (the outbox holds 2)",
        future_size(plain_socket),
        future_size(guarded_socket),
        future_size(deadline_socket),
        size_of::<WebSocket>(),
        size_of::<Guard>(),
        size_of::<tokio::time::Sleep>(),
        size_of::<RevocationWatch>(),
        size_of::<Verifier>(),
        size_of::<tracing::Span>(),
        size_of::<AxumMessage>(),
    );
}

fn server_main() {
    let wanted: Vec<usize> = std::env::var("SCALE_COUNT")
        .unwrap_or_else(|_| "100000".into())
        .split(',')
        .map(|c| {
            c.trim()
                .replace('_', "")
                .parse()
                .expect("SCALE_COUNT: counts")
        })
        .collect();
    let rounds = env_usize("SCALE_ROUNDS", 1).max(1);
    let idle_secs = env_usize("SCALE_IDLE_SECS", 10) as u64;
    let expiring = env_usize("SCALE_EXPIRING", 10_000);
    let index = env_usize("SCALE_INDEX", 100_000);
    let tracing = std::env::var_os("SCALE_TRACING").is_some_and(|v| v != "0");
    if tracing {
        // What a production server has: a subscriber recording INFO spans
        // and events (formatted, then discarded).
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .init();
    }

    let most = *wanted.iter().max().unwrap();
    let (limit, why) = raise_fd_limit((most + FD_RESERVE) as u64);
    let fits = (limit as usize).saturating_sub(FD_RESERVE);
    let mut counts: Vec<usize> = wanted.iter().map(|&c| c.min(fits)).collect();
    counts.dedup();
    if let Some(why) = why {
        println!("{why}: {most} sockets do not fit; measuring at most {fits} per process");
    }
    println!(
        "scale: counts {counts:?}, {rounds} round(s), idle {idle_secs} s, {expiring} expiring, \
         revocation among {index} watches, tracing subscriber: {}",
        if tracing { "fmt at INFO" } else { "none" }
    );
    print_layout();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tower_ws_auth::jwt::install_crypto_provider().unwrap();
        let revocations = Revocations::memory();
        // No leeway: a credential's `exp` is the instant its socket closes.
        let jwt = JwtVerifier::<Claims>::hs256(SECRET)
            .unwrap()
            .leeway(Duration::ZERO);
        let server = Server {
            verifier: revocations.enforce(jwt),
            revocations,
            live: Arc::new(Live::new()),
        };
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
        let listener = socket.listen(4096).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, router(server.clone())).into_future());

        let mut bench = Bench {
            addr,
            server,
            idle: Duration::from_secs(idle_secs),
            expiring,
            index,
            fleets: 0,
        };
        // Warm-up, unmeasured: the allocator's arenas and the runtime's
        // structures reach their working shape.
        let warm = counts[0].min(2000);
        bench.baseline_fleet(warm).await;
        bench.idle = Duration::ZERO;
        let index = std::mem::replace(&mut bench.index, 0);
        bench.guarded_fleet(warm).await;
        bench.idle = Duration::from_secs(idle_secs);
        bench.index = index;

        let mut results = Vec::new();
        for &count in &counts {
            let mut rounds_done = Vec::new();
            for round in 0..rounds {
                let r = bench.round(count, round).await;
                print_round(count, round, &r);
                rounds_done.push(r);
            }
            results.push((count, rounds_done));
        }
        print_summary(&results, idle_secs);
    });
}

// ---------------------------------------------------------------- fleet

struct FleetConfig {
    server: SocketAddr,
    path: String,
    count: usize,
    targets: usize,
    expiring: usize,
    expiry: u64,
    source: u8,
}

fn class(config: &FleetConfig, i: usize) -> &'static str {
    if i < config.targets {
        "target"
    } else if i < config.targets + config.expiring {
        "expiring"
    } else {
        "other"
    }
}

/// What the fleet has seen.
#[derive(Default)]
struct Tally {
    connected: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
    settled: Notify,
    closes: Mutex<Closes>,
    closed: Notify,
}

#[derive(Default)]
struct Closes {
    /// (socket index, close code, monotonic ns)
    events: Vec<(usize, u16, u64)>,
    by_code: HashMap<u16, usize>,
}

impl Tally {
    fn connect_result(&self, result: Result<(), String>, count: usize) {
        match result {
            Ok(()) => self.connected.fetch_add(1, Ordering::SeqCst),
            Err(error) => {
                self.first_error.lock().unwrap().get_or_insert(error);
                self.failed.fetch_add(1, Ordering::SeqCst)
            }
        };
        if self.connected.load(Ordering::SeqCst) + self.failed.load(Ordering::SeqCst) == count {
            self.settled.notify_one();
        }
    }

    fn close(&self, index: usize, code: u16) {
        let at = mono_ns();
        let mut closes = self.closes.lock().unwrap();
        closes.events.push((index, code, at));
        *closes.by_code.entry(code).or_default() += 1;
        drop(closes);
        self.closed.notify_one();
    }

    fn count(&self, code: u16) -> usize {
        let closes = self.closes.lock().unwrap();
        closes.by_code.get(&code).copied().unwrap_or(0)
    }

    fn status(&self, config: &FleetConfig) -> Value {
        let closes = self.closes.lock().unwrap();
        let mut groups: BTreeMap<(&str, u16), (u64, u64, u64)> = BTreeMap::new();
        for &(index, code, at) in &closes.events {
            let group = groups
                .entry((class(config, index), code))
                .or_insert((0, u64::MAX, 0));
            group.0 += 1;
            group.1 = group.1.min(at);
            group.2 = group.2.max(at);
        }
        let closes: Vec<Value> = groups
            .into_iter()
            .map(|((class, code), (n, first, last))| {
                json!({"class": class, "code": code, "n": n, "first": first, "last": last})
            })
            .collect();
        json!({
            "connected": self.connected.load(Ordering::SeqCst),
            "closes": closes,
        })
    }
}

async fn open(
    server: SocketAddr,
    source: Ipv4Addr,
    path: &str,
    token: &str,
) -> Result<WebSocketStream<TcpStream>, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect from {source}: {e}"))?;
    let mut request = format!("ws://{server}{path}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().map_err(|_| "token")?,
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0);
    let (socket, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(socket)
}

/// One client: connect, then wait for the server to close; record the code.
async fn client(
    config: Arc<FleetConfig>,
    index: usize,
    token: String,
    connecting: Arc<Semaphore>,
    tally: Arc<Tally>,
) {
    let source = Ipv4Addr::new(127, config.source, (index / PER_SOURCE) as u8, 1);
    let permit = connecting.acquire_owned().await.unwrap();
    let mut opened = open(config.server, source, &config.path, &token).await;
    if opened.is_err() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        opened = open(config.server, source, &config.path, &token).await;
    }
    drop(permit);
    drop(token);
    let mut socket = match opened {
        Ok(socket) => socket,
        Err(error) => {
            tally.connect_result(Err(error), config.count);
            return;
        }
    };
    tally.connect_result(Ok(()), config.count);
    let code = loop {
        match socket.next().await {
            Some(Ok(Message::Close(frame))) => break frame.map_or(1005, |f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break 1006,
        }
    };
    tally.close(index, code);
    // Let the client answer the close.
    while let Some(Ok(_)) = socket.next().await {}
}

fn fleet_main() {
    let var = |name: &str| std::env::var(name).unwrap();
    let config = Arc::new(FleetConfig {
        server: var("SCALE_FLEET").parse().unwrap(),
        path: var("SCALE_FLEET_PATH"),
        count: var("SCALE_FLEET_COUNT").parse().unwrap(),
        targets: var("SCALE_FLEET_TARGETS").parse().unwrap(),
        expiring: var("SCALE_FLEET_EXPIRING").parse().unwrap(),
        expiry: var("SCALE_FLEET_EXPIRY").parse().unwrap(),
        source: var("SCALE_FLEET_SOURCE").parse().unwrap(),
    });
    let (limit, why) = raise_fd_limit((config.count + FD_RESERVE) as u64);
    if let Some(why) = why {
        eprintln!("fleet: {why}");
    }
    assert!(
        limit as usize >= config.count + FD_RESERVE,
        "fleet: {} sockets do not fit in {limit} descriptors",
        config.count
    );
    tower_ws_auth::jwt::install_crypto_provider().unwrap();
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    let now = unix_now();
    let tokens: Vec<String> = (0..config.count)
        .map(|i| {
            let claims = Claims {
                sub: match class(&config, i) {
                    "target" => TARGET.to_owned(),
                    _ => format!("user-{i}"),
                },
                exp: match class(&config, i) {
                    "expiring" => config.expiry,
                    _ => now + HOUR,
                },
                iat: now,
            };
            jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
        })
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tally = Arc::new(Tally::default());
        let connecting = Arc::new(Semaphore::new(CONNECTING));
        let started = mono_ns();
        for (index, token) in tokens.into_iter().enumerate() {
            tokio::spawn(client(
                config.clone(),
                index,
                token,
                connecting.clone(),
                tally.clone(),
            ));
        }
        while tally.connected.load(Ordering::SeqCst) + tally.failed.load(Ordering::SeqCst)
            < config.count
        {
            tally.settled.notified().await;
        }
        let report = json!({
            "connected": tally.connected.load(Ordering::SeqCst),
            "failed": tally.failed.load(Ordering::SeqCst),
            "first_error": tally.first_error.lock().unwrap().clone(),
            "ms": (mono_ns() - started) as f64 / 1e6,
        });
        println!("CONNECTED {report}");

        let mut commands = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(command)) = commands.next_line().await {
            let words: Vec<&str> = command.split_whitespace().collect();
            match words.as_slice() {
                ["WAIT", code, n, ms] => {
                    let (code, n): (u16, usize) = (code.parse().unwrap(), n.parse().unwrap());
                    let within = Duration::from_millis(ms.parse().unwrap());
                    let _ = tokio::time::timeout(within, async {
                        while tally.count(code) < n {
                            tally.closed.notified().await;
                        }
                    })
                    .await;
                    println!("STATUS {}", tally.status(&config));
                }
                ["STATUS"] => println!("STATUS {}", tally.status(&config)),
                _ => break,
            }
        }
        // QUIT or the server gone: exit, and let the kernel close the sockets.
        std::process::exit(0);
    });
}
