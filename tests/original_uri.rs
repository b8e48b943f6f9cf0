//! No copy of a query credential survives for the handler: axum records the
//! request's `OriginalUri` before any route layer runs, and the layer strips
//! that copy too, with `route_layer`, nested routers and `Router::layer`.
#![cfg(all(feature = "axum", feature = "jwt", feature = "rust-crypto"))]

mod common;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::OriginalUri;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use common::*;
use tower_ws_auth::authenticate::Scheme;
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
use tower_ws_auth::source::Query;
use tower_ws_auth::WsAuthLayer;

/// Sends the handler's view of the URI: the request's own and axum's copy.
async fn report(
    upgrade: WebSocketUpgrade,
    OriginalUri(original): OriginalUri,
    uri: http::Uri,
) -> Response {
    upgrade.on_upgrade(move |mut socket| async move {
        let seen = format!("{uri} {original}");
        let _ = socket.send(Message::text(seen)).await;
    })
}

fn layer() -> WsAuthLayer<Scheme<Query, JwtVerifier<BasicClaims>>> {
    WsAuthLayer::new(
        Query::param("token"),
        JwtVerifier::<BasicClaims>::hs256(SECRET).unwrap(),
    )
}

#[tokio::test]
async fn original_uri_is_stripped_in_every_placement() {
    let route_layer = Router::new().route("/ws", get(report).route_layer(layer()));
    let nested = Router::new().nest(
        "/api",
        Router::new().route("/ws", get(report).route_layer(layer())),
    );
    let router_layer = Router::new().route("/ws", get(report)).layer(layer());
    let outside_nest = Router::new()
        .nest("/api", Router::new().route("/ws", get(report)))
        .layer(layer());

    for (name, router, path, expected) in [
        ("route_layer", route_layer, "/ws", "/ws?room=1 /ws?room=1"),
        ("nested", nested, "/api/ws", "/ws?room=1 /api/ws?room=1"),
        (
            "Router::layer",
            router_layer,
            "/ws",
            "/ws?room=1 /ws?room=1",
        ),
        (
            "layer around a nest",
            outside_nest,
            "/api/ws",
            "/ws?room=1 /api/ws?room=1",
        ),
    ] {
        let addr = serve(router).await;
        let secret = token("alice", 60);
        let (mut socket, _) = connect(addr, &format!("{path}?room=1&token={secret}"), &[])
            .await
            .unwrap_or_else(|refused| panic!("{name}: {refused:?}"));
        let seen = next_text(&mut socket).await;
        assert!(
            !seen.contains(&secret),
            "{name}: the handler saw the token: {seen}"
        );
        assert_eq!(seen, expected, "{name}");
    }
}
