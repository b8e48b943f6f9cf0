//! The tower-http example: tickets issued behind `AsyncRequireAuthorizationLayer`
//! (the identity comes from that layer's extension), redeemed by `WsAuthLayer`.
#![cfg(all(feature = "axum", feature = "jwt", feature = "rust-crypto"))]

mod common;

#[allow(dead_code)]
#[path = "../examples/tower_http.rs"]
mod tower_http_example;

use common::*;
use http::StatusCode;

#[tokio::test]
async fn tickets_issued_behind_tower_http_auth_are_redeemed_once() {
    let addr = serve(tower_http_example::app(SECRET).unwrap()).await;

    let anonymous = http(addr, "POST", "/ws-ticket", &[], "").await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "tower-http's auth layer guards the endpoint"
    );

    let ticket = issue_ticket(addr, &token("alice", 60)).await;

    let (mut socket, _) = connect(addr, &format!("/ws?ticket={ticket}"), &[])
        .await
        .unwrap();
    assert_eq!(next_text(&mut socket).await, "hello alice");
    let replay = refused(addr, &format!("/ws?ticket={ticket}"), &[]).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
}

/// A ticket bought with a 2-second token opens a socket that closes when the
/// token expires (4002), not one that lives forever.
#[tokio::test]
async fn a_ticket_never_outlives_the_token_that_bought_it() {
    let addr = serve(tower_http_example::app(SECRET).unwrap()).await;
    let ticket = issue_ticket(addr, &token("alice", 2)).await;
    let (mut socket, _) = connect(addr, &format!("/ws?ticket={ticket}"), &[])
        .await
        .unwrap();
    assert_eq!(next_text(&mut socket).await, "hello alice");
    // exp + the verifier's 5 s leeway, plus a generous margin.
    let started = std::time::Instant::now();
    assert_eq!(
        close_code(&mut socket, std::time::Duration::from_secs(20)).await,
        Some(4002)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}
