//! 10,000 concurrent sockets that never authenticate: all are closed at the
//! deadline, and the process's memory returns near its baseline.
#![cfg(all(feature = "axum", feature = "jwt", feature = "rust-crypto"))]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use common::*;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tower_ws_auth::first_message::FirstMessageAuth;
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};

const SOCKETS: usize = 10_000;
// The product default: long enough that all 10,000 clients are connected
// before the first ones are closed.
const DEADLINE: Duration = Duration::from_secs(5);

/// Resident set size in bytes, from /proc/self/statm.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Ask glibc's allocator to hand its free pages back to the kernel, so that
/// RSS shows what is still allocated rather than what the allocator keeps
/// cached for reuse.
fn release_free_memory() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim only releases memory that is already free.
    unsafe {
        malloc_trim(0);
    }
}

async fn never_authenticating_clients(
    addr: std::net::SocketAddr,
    count: usize,
) -> (usize, Duration) {
    let closed_4001 = Arc::new(AtomicUsize::new(0));
    // Connect at most 256 at a time (the listen backlog); each stays open.
    let connecting = Arc::new(Semaphore::new(256));
    let started = Instant::now();
    let clients: Vec<_> = (0..count)
        .map(|_| {
            let closed = closed_4001.clone();
            let connecting = connecting.clone();
            tokio::spawn(async move {
                let permit = connecting.acquire_owned().await.unwrap();
                let config = WebSocketConfig::default()
                    .read_buffer_size(4096)
                    .write_buffer_size(0);
                let (mut socket, _) = tokio_tungstenite::connect_async_with_config(
                    format!("ws://{addr}/ws"),
                    Some(config),
                    false,
                )
                .await
                .unwrap();
                drop(permit);
                if close_code(&mut socket, DEADLINE * 3).await == Some(4001) {
                    closed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    (closed_4001.load(Ordering::Relaxed), started.elapsed())
}

/// Wait until the server's tasks have all finished: a client sees its close
/// frame before the task that sent it has returned.
async fn settled(waiting: &AtomicUsize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    while waiting.load(Ordering::Relaxed) != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    waiting.load(Ordering::Relaxed)
}

/// A server whose upgrades wait for a first message that never comes; counts
/// the sockets waiting now and at most.
fn idle_server(waiting: Arc<AtomicUsize>, peak: Arc<AtomicUsize>) -> Router {
    let verifier = JwtVerifier::<BasicClaims>::hs256(SECRET).unwrap();
    Router::new().route(
        "/ws",
        get(move |upgrade: WebSocketUpgrade| {
            let verifier = verifier.clone();
            let (waiting, peak) = (waiting.clone(), peak.clone());
            async move {
                // Small buffers until the client has proved who it is: an
                // unauthenticated socket should cost little.
                upgrade
                    .read_buffer_size(4096)
                    .write_buffer_size(0)
                    .max_message_size(64 * 1024)
                    .on_upgrade(move |socket| async move {
                        let now = waiting.fetch_add(1, Ordering::Relaxed) + 1;
                        peak.fetch_max(now, Ordering::Relaxed);
                        let auth = FirstMessageAuth::json().deadline(DEADLINE);
                        let _ = auth.authenticate(socket, &verifier).await;
                        waiting.fetch_sub(1, Ordering::Relaxed);
                    }) as Response
            }
        }),
    )
}

/// On its own: 50 never-authenticating clients against a server of its own,
/// all closed with 4001. With `FLEET_ADDR` set it is the client side of the
/// 10,000-socket test, run in a child process (one process has too few file
/// descriptors for 10,000 server sockets and 10,000 client sockets): it
/// connects `FLEET_COUNT` clients there and prints how many were closed 4001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_fleet() {
    if let Ok(addr) = std::env::var("FLEET_ADDR") {
        let count = std::env::var("FLEET_COUNT").unwrap().parse().unwrap();
        let (closed, elapsed) = never_authenticating_clients(addr.parse().unwrap(), count).await;
        println!(
            "FLEET closed_4001={closed} elapsed_ms={}",
            elapsed.as_millis()
        );
        return;
    }
    let waiting = Arc::new(AtomicUsize::new(0));
    let addr = serve(idle_server(waiting.clone(), Arc::default())).await;
    let (closed, _) = never_authenticating_clients(addr, 50).await;
    assert_eq!(closed, 50);
    assert_eq!(settled(&waiting).await, 0, "no server task is left waiting");
}

/// Run `count` never-authenticating clients in a child process; how many were
/// closed with 4001.
async fn fleet(addr: std::net::SocketAddr, count: usize) -> usize {
    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "client_fleet", "--nocapture", "--test-threads=1"])
        .env("FLEET_ADDR", addr.to_string())
        .env("FLEET_COUNT", count.to_string())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client fleet failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("FLEET ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no fleet report in: {stdout}"));
    println!("{line}");
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("closed_4001="))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_sockets_are_closed_at_the_deadline_and_memory_is_returned() {
    let waiting = Arc::new(AtomicUsize::new(0));
    let peak_waiting = Arc::new(AtomicUsize::new(0));
    let app = idle_server(waiting.clone(), peak_waiting.clone());
    let addr = serve(app).await;

    // Warm up the allocator and the runtime, then take the baseline.
    assert_eq!(fleet(addr, 500).await, 500);
    tokio::time::sleep(Duration::from_millis(300)).await;
    release_free_memory();
    let baseline = rss();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_probe = stop.clone();
    let probe = tokio::spawn(async move {
        let mut peak = 0;
        while !stop_probe.load(Ordering::Relaxed) {
            peak = peak.max(rss());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    });
    let started = Instant::now();
    let closed = fleet(addr, SOCKETS).await;
    let elapsed = started.elapsed();
    assert_eq!(closed, SOCKETS, "every socket is closed with 4001");
    assert_eq!(settled(&waiting).await, 0, "no server task is left waiting");
    let concurrent = peak_waiting.load(Ordering::Relaxed);
    assert!(
        concurrent >= SOCKETS * 9 / 10,
        "only {concurrent} sockets were open at once"
    );
    // Each socket is closed one deadline after its own upgrade, so the whole
    // run ends soon after the last connect.
    assert!(elapsed < DEADLINE * 6, "took {elapsed:?}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    release_free_memory();
    let after = rss();
    stop.store(true, Ordering::Relaxed);
    let peak = probe.await.unwrap();
    println!(
        "server rss: baseline {} KiB, peak {} KiB with {concurrent} sockets open, after {} KiB",
        baseline / 1024,
        peak / 1024,
        after / 1024
    );
    let grown = peak.saturating_sub(baseline);
    let kept = after.saturating_sub(baseline);
    assert!(grown > 0, "the sockets used memory");
    assert!(
        kept <= grown / 4 + 8 * 1024 * 1024,
        "memory not returned: baseline {baseline}, peak {peak}, after {after}"
    );
}
