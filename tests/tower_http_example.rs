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
