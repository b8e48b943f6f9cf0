//! The demo's contract (DESIGN.md), row by row, over loopback with a real
//! WebSocket client — and no credential in anything it logs.
#![cfg(all(feature = "axum", feature = "jwt", feature = "rust-crypto"))]

mod common;

#[allow(dead_code)]
#[path = "../examples/demo/app.rs"]
mod demo;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use http::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

struct Demo {
    addr: SocketAddr,
    origin: String,
}

async fn start() -> Demo {
    captured_logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = format!("http://127.0.0.1:{}", addr.port());
    let router = demo::router(demo::Config {
        jwt_secret: demo::random_secret(),
        allowed_origins: vec![origin.clone(), format!("http://localhost:{}", addr.port())],
        redis_url: None,
    })
    .unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Demo { addr, origin }
}

/// `POST /login` → (token, session cookie value).
async fn login(demo: &Demo, user: &str) -> (String, String) {
    let body = json!({ "user": user }).to_string();
    let response = http(
        demo.addr,
        "POST",
        "/login",
        &[("content-type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    let cookie = response.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );
    let session = cookie
        .trim_start_matches("session=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    (
        response.json()["token"].as_str().unwrap().to_owned(),
        session,
    )
}

async fn welcome(socket: &mut Client, via: &str) {
    assert_eq!(
        next_json(socket).await,
        json!({"type": "welcome", "user": "alice", "via": via})
    );
    assert_echo(socket, "echo me").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_contract() {
    let demo = start().await;
    let page = http(demo.addr, "GET", "/", &[], "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<html"));
    let bad_login = http(
        demo.addr,
        "POST",
        "/login",
        &[("content-type", "application/json")],
        r#"{"user":"<script>"}"#,
    )
    .await;
    assert_eq!(bad_login.status, StatusCode::BAD_REQUEST);

    let (token, session) = login(&demo, "alice").await;
    let bearer = format!("Bearer {token}");
    let mut secrets = vec![token.clone(), session.clone()];

    // Tickets.
    let ticket = http(
        demo.addr,
        "POST",
        "/ws-ticket",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(ticket.status, StatusCode::OK);
    assert_eq!(ticket.headers["cache-control"], "no-store");
    assert_eq!(ticket.json()["expires_in"], 30);
    let ticket = ticket.json()["ticket"].as_str().unwrap().to_owned();
    secrets.push(ticket.clone());
    assert_eq!(
        http(demo.addr, "POST", "/ws-ticket", &[], "").await.status,
        StatusCode::UNAUTHORIZED
    );

    // /ws, each way in.
    let (mut socket, _) = connect(demo.addr, "/ws", &[("authorization", &bearer)])
        .await
        .unwrap();
    welcome(&mut socket, "header").await;
    let (mut socket, _) = connect(demo.addr, &format!("/ws?ticket={ticket}"), &[])
        .await
        .unwrap();
    welcome(&mut socket, "ticket").await;
    let reused = refused(demo.addr, &format!("/ws?ticket={ticket}"), &[]).await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED);
    let cookie = format!("session={session}");
    let (mut socket, _) = connect(
        demo.addr,
        "/ws",
        &[("cookie", &cookie), ("origin", &demo.origin)],
    )
    .await
    .unwrap();
    welcome(&mut socket, "cookie").await;
    let offered = format!("bearer.{token}, chat");
    let (mut socket, headers) = connect(demo.addr, "/ws", &[("sec-websocket-protocol", &offered)])
        .await
        .unwrap();
    assert_eq!(headers["sec-websocket-protocol"], "chat");
    welcome(&mut socket, "subprotocol").await;

    // /ws refusals.
    assert_eq!(
        refused(demo.addr, "/ws", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    for value in ["", "Bearer", "Token abc", "Bearer not-a-jwt"] {
        let refusal = refused(demo.addr, "/ws", &[("authorization", value)]).await;
        assert_eq!(refusal.status, StatusCode::UNAUTHORIZED, "{value:?}");
    }
    let cross_site = refused(
        demo.addr,
        "/ws",
        &[("cookie", &cookie), ("origin", "http://evil.test")],
    )
    .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);

    // /ws/first-message.
    let (mut socket, _) = connect(demo.addr, "/ws/first-message", &[]).await.unwrap();
    socket
        .send(Message::text(
            json!({"type": "auth", "token": token}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "auth_ok", "userId": "alice"})
    );
    assert_echo(&mut socket, "after auth").await;
    let (mut socket, _) = connect(demo.addr, "/ws/first-message", &[]).await.unwrap();
    socket
        .send(Message::text(r#"{"type":"auth","token":"forged"}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await, json!({"type": "auth_fail"}));
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(2)).await,
        Some(4001)
    );
    let (mut socket, _) = connect(demo.addr, "/ws/first-message", &[]).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(7)).await,
        Some(4001)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(4900) && waited < Duration::from_millis(5600),
        "{waited:?}"
    );
    let cross_site = refused(
        demo.addr,
        "/ws/first-message",
        &[("origin", "http://evil.test")],
    )
    .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);

    // Every request was logged, with no credential in the log.
    let logs = log_text();
    assert!(
        logs.contains("uri=/ws?ticket=[redacted]"),
        "the ticket upgrade was logged, redacted"
    );
    assert!(logs.contains("status=403"), "refusals are logged");
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a credential reached the demo's log"
        );
    }
}

/// With `REDIS_URL`, the demo keeps its tickets in Redis.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_issues_and_redeems_tickets_through_redis() {
    let (url, _server) = shared_redis();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = demo::router(demo::Config {
        jwt_secret: demo::random_secret(),
        allowed_origins: vec![format!("http://127.0.0.1:{}", addr.port())],
        redis_url: Some(url.clone()),
    })
    .unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let demo = Demo {
        addr,
        origin: String::new(),
    };
    let (token, _) = login(&demo, "alice").await;
    let ticket = issue_ticket(addr, &token).await;

    // The ticket is in Redis, filed under its hash, not its value.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("ws-ticket:*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| !k.contains(&ticket)));

    let (mut socket, _) = connect(addr, &format!("/ws?ticket={ticket}"), &[])
        .await
        .unwrap();
    welcome(&mut socket, "ticket").await;
    let reused = refused(addr, &format!("/ws?ticket={ticket}"), &[]).await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED);
}
