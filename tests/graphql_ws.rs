#![cfg(all(feature = "axum", feature = "jwt", feature = "rust-crypto"))]
//! The graphql-transport-ws preset against graphql-ws's own client (with the
//! `ws` package), driven by `tests/graphql/run.mjs`: a token in
//! `connection_init`, a refusal the client retries, expiry of a live socket
//! followed by the client's own reconnect, and every payload shape the preset
//! reads. Needs `node`; installs the npm packages itself when missing. Fails
//! (never skips) when a dependency is missing.

mod common;

use std::path::Path;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tower_ws_auth::first_message::{FirstMessageAuth, LifetimeGuard};
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};

const SUBPROTOCOL: &str = "graphql-transport-ws";

/// Time between two values of a subscription.
const INTERVAL: Duration = Duration::from_millis(200);

/// Values a subscription sends when the client does not say.
const DEFAULT_COUNT: u64 = 5;

/// Longest a run of the client may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

async fn graphql(
    State(verifier): State<JwtVerifier<BasicClaims>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols([SUBPROTOCOL])
        .on_upgrade(move |socket| session(socket, verifier))
}

/// Authenticate with `connection_init`, then serve subscriptions through the
/// lifetime guard until the socket ends.
async fn session(socket: WebSocket, verifier: JwtVerifier<BasicClaims>) {
    let auth = FirstMessageAuth::graphql_transport_ws();
    let Ok((verified, socket)) = auth.authenticate(socket, &verifier).await else {
        return;
    };
    let mut guard = LifetimeGuard::new(
        socket,
        &verified.identity,
        verified.expires_at,
        verifier,
        auth.protocol().to_owned(),
    );
    let (outgoing, mut queued) = mpsc::channel::<String>(64);
    // Dropped with the socket: every stream stops with it.
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            incoming = guard.next() => {
                let Some(Ok(message)) = incoming else { break };
                let Message::Text(text) = message else { continue };
                let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
                match message["type"].as_str() {
                    Some("subscribe") => {
                        let id = message["id"].clone();
                        let count = message["payload"]["variables"]["to"]
                            .as_u64()
                            .unwrap_or(DEFAULT_COUNT);
                        streams.spawn(count_to(outgoing.clone(), id, count));
                    }
                    Some("ping") => {
                        let pong = json!({ "type": "pong" }).to_string();
                        if guard.send(Message::text(pong)).await.is_err() {
                            break;
                        }
                    }
                    // `complete` from the client, and anything else: nothing to do.
                    _ => {}
                }
            }
            Some(text) = queued.recv() => {
                if guard.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// `next` with `{"count": i}` for i in 1..=count, `INTERVAL` apart, then
/// `complete`.
async fn count_to(outgoing: mpsc::Sender<String>, id: Value, count: u64) {
    for i in 1..=count {
        tokio::time::sleep(INTERVAL).await;
        let next = json!({ "id": id, "type": "next", "payload": { "data": { "count": i } } });
        if outgoing.send(next.to_string()).await.is_err() {
            return;
        }
    }
    let complete = json!({ "id": id, "type": "complete" });
    let _ = outgoing.send(complete.to_string()).await;
}

#[derive(Deserialize)]
struct TokenQuery {
    ttl: u64,
}

/// A fresh token for alice living `ttl` seconds.
async fn token(Query(query): Query<TokenQuery>) -> String {
    common::token("alice", query.ttl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_ws_client_against_the_preset() {
    let client_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graphql");
    let installed = ["graphql-ws", "ws", "graphql"]
        .iter()
        .all(|package| client_dir.join("node_modules").join(package).exists());
    if !installed {
        let status = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&client_dir)
            .status()
            .await
            .expect("npm is installed (it comes with node)");
        assert!(status.success(), "npm ci in tests/graphql failed");
    }

    // No clock-skew allowance: the guard closes the socket at the token's
    // `exp`, so a token living a few seconds expires mid-stream.
    let verifier = JwtVerifier::<BasicClaims>::hs256(common::SECRET)
        .unwrap()
        .leeway(Duration::ZERO);
    let router = Router::new()
        .route("/graphql", get(graphql))
        .route("/token", get(token))
        .with_state(verifier);
    let addr = common::serve(router).await;

    let mut node = tokio::process::Command::new("node");
    node.arg(client_dir.join("run.mjs"))
        .arg(format!("ws://{addr}/graphql"))
        .arg(format!("http://{addr}"))
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIMEOUT, node.output())
        .await
        .expect("the graphql-ws client finishes within its timeout")
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "graphql-ws checks failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}
