//! Loopback handshake benchmark: N WebSocket connections (connect,
//! authenticate, one echo, close) at a given concurrency against an axum
//! server, with and without authentication, in the same run.
//!
//! The server runs in a child process so its CPU time can be measured apart
//! from the load generator's (both share the machine's cores):
//! `CLOCK_PROCESS_CPUTIME_ID`, read through `GET /cpu`. Reported per mode: the
//! median over rounds of connections/s and of server CPU µs per connection,
//! and the CPU ratio against the no-auth server.
//!
//! `cargo bench --bench handshake`; `HANDSHAKE_N` (default 4000),
//! `HANDSHAKE_CONCURRENCY` (default 32), `HANDSHAKE_ROUNDS` (default 5).
//!
//! Modes: `none` (no authentication), `handwritten` (the minimal correct
//! check an application would write in a middleware: `Authorization` header
//! lookup → `jsonwebtoken::decode` → claims into the extensions), and the
//! crate's layer per source: `header`, `ticket`, `cookie`, `subprotocol`.
//!
//! With `HANDSHAKE_CALLGRIND=1` it counts instead the instructions the server
//! executes per upgrade, under `valgrind --tool=callgrind`: each mode's
//! server runs twice, for `HANDSHAKE_N / 4` and `HANDSHAKE_N` connections, and
//! the difference of the two totals divided by the difference of the counts
//! cancels start-up and shut-down. Instruction counts do not depend on what
//! else the machine is doing.

use std::collections::HashMap;
use std::future::ready;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as AxumMessage, WebSocketUpgrade};
use axum::extract::Query as QueryParams;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
use tower_ws_auth::source::{Bearer, Cookie, Query, Subprotocol};
use tower_ws_auth::ticket::{MemoryTicketStore, TicketStore};
use tower_ws_auth::{AuthErrorKind, Credential, OriginPolicy, Verified, WsAuthLayer};

const SECRET: &[u8] = b"benchmark-secret-of-thirty-two-b";
const ORIGIN: &str = "http://bench.local";
const MODES: [&str; 6] = [
    "none",
    "handwritten",
    "header",
    "ticket",
    "cookie",
    "subprotocol",
];
const SUBPROTOCOL: &str = "chat";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time this process has used, in nanoseconds.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn claims() -> BasicClaims {
    BasicClaims {
        sub: "alice".into(),
        exp: tower_ws_auth::jwt::now_secs() + 3600,
    }
}

async fn echo_once(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket| async move {
        while let Some(Ok(message)) = socket.next().await {
            if let AxumMessage::Text(text) = message {
                if socket.send(AxumMessage::Text(text)).await.is_err() {
                    break;
                }
            }
        }
    })
}

async fn echo_chat(upgrade: WebSocketUpgrade) -> Response {
    echo_once(upgrade.protocols([SUBPROTOCOL])).await
}

/// The minimal correct check an application would write by hand: the
/// `Authorization` header, `jsonwebtoken::decode` with the same algorithm,
/// `exp` required and checked, the claims into the extensions.
async fn handwritten(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::response::IntoResponse;
    static KEY: std::sync::LazyLock<(jsonwebtoken::DecodingKey, jsonwebtoken::Validation)> =
        std::sync::LazyLock::new(|| {
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
            validation.leeway = 5;
            (jsonwebtoken::DecodingKey::from_secret(SECRET), validation)
        });
    let token = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return http::StatusCode::UNAUTHORIZED.into_response();
    };
    match jsonwebtoken::decode::<BasicClaims>(token, &KEY.0, &KEY.1) {
        Ok(data) => {
            request.extensions_mut().insert(data.claims);
            next.run(request).await
        }
        Err(_) => http::StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn server() {
    let jwt = JwtVerifier::<BasicClaims>::hs256(SECRET).unwrap();
    let tickets = MemoryTicketStore::<BasicClaims>::with_limits(1_000_000, 1_000_000);
    let sessions: Arc<HashMap<String, BasicClaims>> = Arc::new(HashMap::from([(
        "bench-session-id-0123456789abcdef0123456789".to_owned(),
        claims(),
    )]));
    let lookup = move |c: Credential| {
        ready(match sessions.get(c.expose_secret()) {
            Some(claims) => Ok(Verified::new(claims.clone())),
            None => Err(AuthErrorKind::Invalid.into()),
        })
    };
    let issuer = tickets.clone();
    let app = Router::new()
        .route("/none", get(echo_once))
        .route(
            "/handwritten",
            get(echo_once).route_layer(axum::middleware::from_fn(handwritten)),
        )
        .route(
            "/header",
            get(echo_once).route_layer(WsAuthLayer::new(Bearer, jwt.clone())),
        )
        .route(
            "/subprotocol",
            get(echo_chat).route_layer(WsAuthLayer::new(Subprotocol::prefix("bearer."), jwt)),
        )
        .route(
            "/ticket",
            get(echo_once)
                .route_layer(WsAuthLayer::new(Query::param("ticket"), tickets.verifier())),
        )
        .route(
            "/cookie",
            get(echo_once).route_layer(
                WsAuthLayer::new(Cookie::named("session"), lookup)
                    .origin(OriginPolicy::allow([ORIGIN]).unwrap()),
            ),
        )
        // Outside the measured window: tickets for the ticket mode, in bulk.
        .route(
            "/tickets",
            post(move |QueryParams(q): QueryParams<HashMap<String, usize>>| {
                let issuer = issuer.clone();
                async move {
                    let n = q.get("n").copied().unwrap_or(1);
                    let mut out = String::new();
                    for _ in 0..n {
                        let issued = issuer
                            .issue(Verified::new(claims()), Duration::from_secs(600))
                            .await
                            .unwrap();
                        out.push_str(issued.ticket.expose_secret());
                        out.push('\n');
                    }
                    out
                }
            }),
        )
        .route("/cpu", get(|| async { process_cpu_ns().to_string() }))
        // Ends the process cleanly, so that a profiler writes its totals.
        .route(
            "/exit",
            post(|| async {
                tokio::spawn(async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    std::process::exit(0)
                });
                "bye"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("PORT {}", listener.local_addr().unwrap().port());
    axum::serve(listener, app).await.unwrap();
}

async fn http(addr: SocketAddr, method: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    raw.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

async fn server_cpu(addr: SocketAddr) -> u64 {
    http(addr, "GET", "/cpu").await.trim().parse().unwrap()
}

/// One connection: connect, authenticate, one echo, close.
async fn connection(addr: SocketAddr, mode: &str, token: &str, ticket: Option<String>) {
    let path = match (mode, ticket) {
        ("ticket", Some(t)) => format!("/ticket?ticket={t}"),
        _ => format!("/{mode}"),
    };
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    let headers = request.headers_mut();
    match mode {
        "header" | "handwritten" => {
            headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        "subprotocol" => {
            headers.insert(
                "sec-websocket-protocol",
                format!("bearer.{token}, {SUBPROTOCOL}").parse().unwrap(),
            );
        }
        "cookie" => {
            headers.insert(
                "cookie",
                "session=bench-session-id-0123456789abcdef0123456789"
                    .parse()
                    .unwrap(),
            );
            headers.insert("origin", ORIGIN.parse().unwrap());
        }
        _ => {}
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket.send(Message::text("ping")).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed.to_text().unwrap(), "ping");
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
}

struct Sample {
    conns_per_sec: f64,
    cpu_us_per_conn: f64,
}

async fn run_mode(
    addr: SocketAddr,
    mode: &str,
    n: usize,
    concurrency: usize,
    token: &str,
) -> Sample {
    let mut tickets = if mode == "ticket" {
        http(addr, "POST", &format!("/tickets?n={n}"))
            .await
            .lines()
            .map(str::to_owned)
            .collect()
    } else {
        Vec::new()
    };
    let limit = Arc::new(Semaphore::new(concurrency));
    let cpu_before = server_cpu(addr).await;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (mode, token, ticket) = (mode.to_owned(), token.to_owned(), tickets.pop());
        tasks.push(tokio::spawn(async move {
            connection(addr, &mode, &token, ticket).await;
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let cpu = server_cpu(addr).await - cpu_before;
    Sample {
        conns_per_sec: n as f64 / elapsed.as_secs_f64(),
        cpu_us_per_conn: cpu as f64 / 1000.0 / n as f64,
    }
}

/// A server child: under `valgrind` when `profile` names the output file.
fn spawn_server(profile: Option<&std::path::Path>) -> (std::process::Child, SocketAddr) {
    let exe = std::env::current_exe().unwrap();
    let mut command = match profile {
        Some(out) => {
            let mut c = Command::new("valgrind");
            c.arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(&exe)
                .arg("--one-thread");
            c
        }
        None => Command::new(&exe),
    };
    let mut child = command
        .arg("--server")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts (valgrind installed for HANDSHAKE_CALLGRIND)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
    (child, ([127, 0, 0, 1], port).into())
}

/// Total instructions the server child executed, from valgrind's summary.
fn total_instructions(child: std::process::Child) -> u64 {
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    log.lines()
        .filter_map(|l| l.split_once("Collected :"))
        .filter_map(|(_, n)| n.trim().replace(',', "").parse().ok())
        .max()
        .unwrap_or_else(|| panic!("no instruction total in: {log}"))
}

fn token() -> String {
    tower_ws_auth::jwt::install_crypto_provider().unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// Instructions per upgrade, per mode: one connection at a time against a
/// one-thread server, so that every upgrade does the same work.
fn instructions(n: usize, _concurrency: usize) {
    let concurrency = 1;
    let token = token();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("handshake-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut per_upgrade = Vec::new();
    // `HANDSHAKE_MODES=header,handwritten` measures only those.
    let only = std::env::var("HANDSHAKE_MODES").unwrap_or_default();
    for mode in MODES {
        if !only.is_empty() && !only.split(',').any(|m| m == mode) {
            continue;
        }
        let mut totals = Vec::new();
        for count in [n / 4, n] {
            let (child, addr) = spawn_server(Some(&dir.join(format!("{mode}-{count}"))));
            rt.block_on(async {
                run_mode(addr, mode, count, concurrency, &token).await;
                http(addr, "POST", "/exit").await;
            });
            totals.push(total_instructions(child));
        }
        let ir = (totals[1] - totals[0]) as f64 / (n - n / 4) as f64;
        eprintln!("{mode:>12}: {ir:.0} instructions per upgrade");
        per_upgrade.push((mode, ir));
    }
    let of = |name: &str| {
        per_upgrade
            .iter()
            .find(|(m, _)| *m == name)
            .map_or(0.0, |(_, ir)| *ir)
    };
    let (none, handwritten) = (of("none"), of("handwritten"));
    println!(
        "
server instructions per upgrade ({} connections, concurrency {concurrency}):",
        n - n / 4
    );
    println!("| mode | instructions | beyond no auth | beyond the hand-written check |");
    println!("|---|---|---|---|");
    for (mode, ir) in &per_upgrade {
        println!(
            "| {mode} | {ir:.0} | {:+.0} | {:+.0} |",
            ir - none,
            ir - handwritten
        );
    }
    // `HANDSHAKE_KEEP=1` keeps the profiles for `callgrind_annotate`.
    if env("HANDSHAKE_KEEP", 0) == 1 {
        println!("profiles in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--server") {
        // One thread when instructions are counted: the same work in the
        // same order every time, no work stealing between workers.
        let rt = if std::env::args().any(|a| a == "--one-thread") {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
        }
        .unwrap();
        rt.block_on(server());
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        println!("handshake: benchmark");
        return;
    }
    let n = env("HANDSHAKE_N", 4000);
    let concurrency = env("HANDSHAKE_CONCURRENCY", 32);
    let rounds = env("HANDSHAKE_ROUNDS", 5);
    if env("HANDSHAKE_CALLGRIND", 0) == 1 {
        instructions(n, concurrency);
        return;
    }

    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--server")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    tower_ws_auth::jwt::install_crypto_provider().unwrap();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut samples: HashMap<&str, Vec<Sample>> = HashMap::new();
    rt.block_on(async {
        // Warm-up: every route once at full load, unmeasured.
        for mode in MODES {
            run_mode(addr, mode, n / 4, concurrency, &token).await;
        }
        // Modes interleaved round by round, in a rotating order, so drift
        // and position hit them alike.
        for round in 0..rounds {
            for offset in 0..MODES.len() {
                let mode = MODES[(round + offset) % MODES.len()];
                let sample = run_mode(addr, mode, n, concurrency, &token).await;
                eprintln!(
                    "round {round} {mode:>6}: {:>7.0} conn/s, {:>6.1} µs server CPU/conn",
                    sample.conns_per_sec, sample.cpu_us_per_conn
                );
                samples.entry(mode).or_default().push(sample);
            }
        }
    });
    let _ = child.kill();
    let _ = child.wait();

    let cpu = |mode: &str| median(samples[mode].iter().map(|s| s.cpu_us_per_conn).collect());
    let rate = |mode: &str| median(samples[mode].iter().map(|s| s.conns_per_sec).collect());
    // Ratios are taken round by round (each mode against the no-auth run of
    // the same round), then the median over rounds.
    let ratio = |mode: &str, f: fn(&Sample) -> f64| {
        median(
            samples[mode]
                .iter()
                .zip(&samples["none"])
                .map(|(s, base)| f(s) / f(base))
                .collect(),
        )
    };
    println!("\nhandshake: {n} connections x {rounds} rounds, concurrency {concurrency} (medians)");
    println!("| mode | conn/s | vs none | server CPU µs/conn | vs none |");
    println!("|---|---|---|---|---|");
    for mode in MODES {
        println!(
            "| {mode} | {:.0} | {:.3}x | {:.1} | {:.3}x |",
            rate(mode),
            ratio(mode, |s| s.conns_per_sec),
            cpu(mode),
            ratio(mode, |s| s.cpu_us_per_conn)
        );
    }
}
