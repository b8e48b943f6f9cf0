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
use tower_ws_auth::source::{Bearer, Cookie, Query};
use tower_ws_auth::ticket::{MemoryTicketStore, TicketStore};
use tower_ws_auth::{AuthErrorKind, Credential, OriginPolicy, Verified, WsAuthLayer};

const SECRET: &[u8] = b"benchmark-secret-of-thirty-two-b";
const ORIGIN: &str = "http://bench.local";
const MODES: [&str; 4] = ["none", "header", "ticket", "cookie"];

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
            "/header",
            get(echo_once).route_layer(WsAuthLayer::new(Bearer, jwt)),
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
        .route("/cpu", get(|| async { process_cpu_ns().to_string() }));
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
        "header" => {
            headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--server") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
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
