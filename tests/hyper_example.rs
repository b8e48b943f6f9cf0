//! The layer in front of the plain hyper example (no axum), over loopback.
#![cfg(all(feature = "tungstenite", feature = "jwt", feature = "rust-crypto"))]

mod common;

#[allow(dead_code)]
#[path = "../examples/hyper.rs"]
mod hyper_example;

use common::*;
use http::StatusCode;
use tokio::net::TcpListener;

async fn start() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { hyper_example::serve(listener, SECRET).await.unwrap() });
    addr
}

#[tokio::test]
async fn header_and_subprotocol_work_over_plain_hyper() {
    let addr = start().await;
    let bearer = format!("Bearer {}", token("alice", 60));
    let (mut socket, _) = connect(addr, "/ws", &[("authorization", &bearer)])
        .await
        .unwrap();
    let welcome = next_json(&mut socket).await;
    assert_eq!(welcome["user"], "alice");
    assert_eq!(welcome["via"], "header");
    assert_echo(&mut socket, "over hyper").await;

    let offered = format!("bearer.{}, chat", token("bob", 60));
    let (mut socket, headers) = connect(addr, "/ws", &[("sec-websocket-protocol", &offered)])
        .await
        .unwrap();
    assert_eq!(headers["sec-websocket-protocol"], "chat");
    assert_eq!(next_json(&mut socket).await["via"], "subprotocol");
}

#[tokio::test]
async fn refusals_over_plain_hyper() {
    let addr = start().await;
    let missing = refused(addr, "/ws", &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers["www-authenticate"], "Bearer");
    assert_eq!(missing.body, "missing credential");

    let forged = format!(
        "Bearer {}",
        hs256(
            &serde_json::json!({"sub": "eve", "exp": now() + 60}),
            b"not-the-server-secret-32-bytes!!!"
        )
    );
    let invalid = refused(addr, "/ws", &[("authorization", &forged)]).await;
    assert_eq!(invalid.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        invalid.headers["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
}
