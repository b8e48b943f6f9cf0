//! The demo in a real browser: Debian's chromium, headless, driven by
//! playwright-core from `tests/browser/run.mjs`. Needs `chromium` and `node`;
//! installs the npm package itself when missing. Fails (never skips) when a
//! dependency is missing.
#![cfg(all(feature = "axum", feature = "jwt", feature = "rust-crypto"))]

mod common;

#[allow(dead_code)]
#[path = "../examples/demo/app.rs"]
mod demo;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

/// One refused or accepted upgrade, as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    origin: Option<String>,
    session_cookie: bool,
    subprotocol_token: bool,
    status: u16,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pattern_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "chromium not found at {chromium}: install it with `apt-get install -y chromium`"
    );
    let browser_dir = root.join("tests/browser");
    if !browser_dir.join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&browser_dir)
            .status()
            .expect("npm is installed");
        assert!(status.success(), "npm ci in tests/browser failed");
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = demo::router(demo::Config {
        jwt_secret: demo::random_secret(),
        allowed_origins: vec![
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
        ],
        redis_url: None,
        max_sessions: demo::MAX_SESSIONS,
    })
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let record = seen.clone();
    let router = router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let record = record.clone();
        async move {
            let (path, origin, session_cookie, subprotocol_token) = {
                let header = |name: &str| {
                    req.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let cookie = header("cookie").is_some_and(|c| c.contains("session="));
                let token = header("sec-websocket-protocol").is_some_and(|p| p.contains("bearer."));
                (req.uri().path().to_owned(), header("origin"), cookie, token)
            };
            let response = next.run(req).await;
            record.lock().unwrap().push(Seen {
                path,
                origin,
                session_cookie,
                subprotocol_token,
                status: response.status().as_u16(),
            });
            response
        }
    }));
    tokio::spawn(demo::serve(listener, router, demo::HEADER_READ_TIMEOUT));

    // A second origin: same host, another port, so the browser still sends
    // the demo's cookie to the demo.
    let evil_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_port = evil_listener.local_addr().unwrap().port();
    let evil = Router::new().route(
        "/",
        get(|| async { Html("<!doctype html><title>another site</title>") }),
    );
    tokio::spawn(async move { axum::serve(evil_listener, evil).await.unwrap() });

    let artifacts = root.join("target/browser-artifacts");
    let output = tokio::process::Command::new("node")
        .arg(browser_dir.join("run.mjs"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(format!("http://127.0.0.1:{evil_port}"))
        .arg(&artifacts)
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "browser checks failed:\n{stdout}\n{stderr}"
    );
    assert!(artifacts.join("demo.png").exists(), "no screenshot");

    // The hijack attempt carried the session cookie and was refused for its
    // Origin.
    let evil_origin = format!("http://127.0.0.1:{evil_port}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|s| s.path == "/ws"
            && s.origin.as_deref() == Some(evil_origin.as_str())
            && s.session_cookie
            && s.status == 403),
        "no cross-origin upgrade with the cookie refused with 403: {seen:?}"
    );

    // The subprotocol sockets carried the session cookie too: the good token
    // was accepted and the bad one refused, whatever the cookie said.
    let both = |status: u16| {
        seen.iter().any(|s| {
            s.path == "/ws" && s.session_cookie && s.subprotocol_token && s.status == status
        })
    };
    assert!(
        both(101),
        "no subprotocol upgrade with the cookie accepted: {seen:?}"
    );
    assert!(
        both(401),
        "no bad subprotocol token with the cookie refused with 401: {seen:?}"
    );
}
