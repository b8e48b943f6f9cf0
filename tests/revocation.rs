//! Logout closes the sockets: revocations refuse the credential at the
//! upgrade and close the live sockets it opened — in memory on one
//! instance, and through a real `redis-server` across instances.
#![cfg(all(feature = "axum", feature = "jwt", feature = "rust-crypto"))]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tower_ws_auth::first_message::{JsonAuth, LifetimeGuard};
use tower_ws_auth::jwt::{numeric_date, JwtClaims, JwtVerifier};
use tower_ws_auth::revocation::{CheckRevoked, Revocations};
use tower_ws_auth::source::Bearer;
use tower_ws_auth::{Authenticated, WsAuthLayer};

/// Claims that say when they were issued (to the millisecond) and which
/// session they belong to.
#[derive(Clone, Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: f64,
    sid: Option<String>,
}

impl JwtClaims for Claims {
    fn subject(&self) -> &str {
        &self.sub
    }
    fn expires_at(&self) -> Option<u64> {
        Some(self.exp)
    }
    fn session_id(&self) -> Option<&str> {
        self.sid.as_deref()
    }
    fn issued_at(&self) -> Option<SystemTime> {
        numeric_date(self.iat)
    }
}

fn now_secs_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn claims_token(sub: &str, sid: &str) -> String {
    hs256(
        &json!({"sub": sub, "exp": now() + 600, "iat": now_secs_f64(), "sid": sid}),
        SECRET,
    )
}

type Verifier = CheckRevoked<JwtVerifier<Claims>>;

async fn guarded(
    upgrade: WebSocketUpgrade,
    auth: Authenticated<Claims>,
    verifier: Verifier,
    revocations: Revocations,
) -> Response {
    upgrade.on_upgrade(move |socket| async move {
        let watch = revocations.watch(&auth.identity);
        let mut socket =
            LifetimeGuard::new(socket, &auth.identity, auth.expires_at, verifier, JsonAuth)
                .revocation(watch);
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                if socket.send(Message::Text(text)).await.is_err() {
                    break;
                }
            }
        }
    })
}

/// One server instance: bearer upgrades through `revocations`.
async fn instance(revocations: Revocations) -> SocketAddr {
    let jwt = revocations.enforce(JwtVerifier::<Claims>::hs256(SECRET).unwrap());
    let guard = jwt.clone();
    let app = Router::new().route(
        "/ws",
        get(move |upgrade, auth| guarded(upgrade, auth, guard.clone(), revocations.clone()))
            .route_layer(WsAuthLayer::new(Bearer, jwt)),
    );
    serve(app).await
}

async fn open(addr: SocketAddr, token: &str) -> Client {
    let (mut socket, _) = connect(
        addr,
        "/ws",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap_or_else(|refused| panic!("{refused:?}"));
    assert_echo(&mut socket, "hello").await;
    socket
}

async fn status(addr: SocketAddr, token: &str) -> StatusCode {
    refused(
        addr,
        "/ws",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .status
}

/// The close code and how long it took.
async fn closed(socket: &mut Client, within: Duration) -> (Option<u16>, Duration) {
    let started = Instant::now();
    let code = close_code(socket, within).await;
    (code, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_closes_the_subjects_sockets_and_refuses_its_credentials() {
    let revocations = Revocations::memory();
    let addr = instance(revocations.clone()).await;
    let alice = claims_token("alice", "a1");
    let alice_elsewhere = claims_token("alice", "a2");
    let bob = claims_token("bob", "b1");
    let mut first = open(addr, &alice).await;
    let mut second = open(addr, &alice_elsewhere).await;
    let mut other = open(addr, &bob).await;

    revocations.revoke_subject("alice").await.unwrap();
    for socket in [&mut first, &mut second] {
        let (code, took) = closed(socket, Duration::from_secs(5)).await;
        assert_eq!(code, Some(4003));
        println!("closed {took:?} after the revocation");
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
    // Only alice's sockets: bob's goes on.
    assert_echo(&mut other, "still here").await;

    assert_eq!(status(addr, &alice).await, StatusCode::UNAUTHORIZED);
    // A login right after the logout, even in the same second, works at once.
    let fresh = claims_token("alice", "a3");
    let mut again = open(addr, &fresh).await;
    assert_echo(&mut again, "back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_session_closes_only_its_sockets() {
    let revocations = Revocations::memory();
    let addr = instance(revocations.clone()).await;
    let laptop = claims_token("carol", "laptop");
    let phone = claims_token("carol", "phone");
    let mut on_laptop = open(addr, &laptop).await;
    let mut on_phone = open(addr, &phone).await;

    revocations.revoke_session("laptop").await.unwrap();
    let (code, _) = closed(&mut on_laptop, Duration::from_secs(5)).await;
    assert_eq!(code, Some(4003));
    assert_echo(&mut on_phone, "still here").await;
    assert_eq!(status(addr, &laptop).await, StatusCode::UNAUTHORIZED);
    open(addr, &phone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_cannot_extend_a_live_socket() {
    let revocations = Revocations::memory();
    let addr = instance(revocations.clone()).await;
    let mut socket = open(addr, &claims_token("dave", "d1")).await;
    let revoked = claims_token("dave", "d2");
    revocations.revoke_session("d2").await.unwrap();
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            json!({"type": "auth", "token": revoked}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await, json!({"type": "auth_fail"}));
    assert_echo(&mut socket, "unchanged").await;
}

#[cfg(feature = "redis")]
mod redis_backend {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::net::{TcpListener, TcpStream};

    /// Wait (bounded) until `revocations` is in step with Redis.
    async fn in_step(revocations: &Revocations) {
        for _ in 0..200 {
            if revocations.is_in_step() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("not in step with Redis after 5 s");
    }

    fn prefix(name: &str) -> String {
        format!("revocation-test-{name}-{}:", std::process::id())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revocation_on_one_instance_closes_sockets_on_another() {
        let (url, _server) = shared_redis();
        let a = Revocations::redis_with_prefix(&url, &prefix("two")).unwrap();
        let b = Revocations::redis_with_prefix(&url, &prefix("two")).unwrap();
        in_step(&a).await;
        in_step(&b).await;
        let on_b = instance(b.clone()).await;
        let token = claims_token("erin", "e1");
        let mut socket = open(on_b, &token).await;

        a.revoke_subject("erin").await.unwrap();
        let (code, took) = closed(&mut socket, Duration::from_secs(5)).await;
        assert_eq!(code, Some(4003));
        println!("closed on the other instance {took:?} after the revocation");
        assert!(took < Duration::from_millis(1500), "took {took:?}");
        assert_eq!(status(on_b, &token).await, StatusCode::UNAUTHORIZED);
    }

    /// A TCP relay to Redis that can be cut, for one instance's connections
    /// only.
    struct Relay {
        addr: SocketAddr,
        up: Arc<AtomicBool>,
        cut: tokio::sync::watch::Sender<u64>,
    }

    impl Relay {
        async fn start(redis_port: u16) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let up = Arc::new(AtomicBool::new(true));
            let (cut, _) = tokio::sync::watch::channel(0u64);
            let (accepting, cuts) = (up.clone(), cut.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if !accepting.load(Ordering::SeqCst) {
                        continue; // dropped: refused while cut
                    }
                    let mut cut = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)).await else {
                            return;
                        };
                        let (mut client, mut server) = (client, server);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            });
            Self { addr, up, cut }
        }

        fn url(&self) -> String {
            format!("redis://{}/", self.addr)
        }

        fn cut(&self) {
            self.up.store(false, Ordering::SeqCst);
            self.cut.send_modify(|n| *n += 1);
        }

        fn restore(&self) {
            self.up.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revocation_missed_while_disconnected_is_enforced_on_reconnect() {
        let server = RedisServer::start();
        let relay = Relay::start(server.port).await;
        let a = Revocations::redis_with_prefix(&server.url(), &prefix("missed")).unwrap();
        let b = Revocations::redis_with_prefix(&relay.url(), &prefix("missed")).unwrap();
        in_step(&a).await;
        in_step(&b).await;
        let on_b = instance(b.clone()).await;
        let token = claims_token("frank", "f1");
        let mut socket = open(on_b, &token).await;

        relay.cut();
        // Out of step: B's upgrades fail closed.
        let mut refused_503 = false;
        for _ in 0..200 {
            if !b.is_in_step() {
                refused_503 = status(on_b, &claims_token("grace", "g1")).await
                    == StatusCode::SERVICE_UNAVAILABLE;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(refused_503, "an instance out of step fails closed");

        a.revoke_subject("frank").await.unwrap();
        // B missed it: its socket is still open.
        assert_echo(&mut socket, "still here").await;

        relay.restore();
        let (code, _) = closed(&mut socket, Duration::from_secs(10)).await;
        assert_eq!(
            code,
            Some(4003),
            "B re-checked its sockets after reconnecting"
        );
        in_step(&b).await;
        assert_eq!(status(on_b, &token).await, StatusCode::UNAUTHORIZED);
        open(on_b, &claims_token("grace", "g2")).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revocations_survive_a_redis_restart_with_an_append_only_file() {
        let mut server = RedisServer::start_persistent();
        let a = Revocations::redis_with_prefix(&server.url(), &prefix("restart")).unwrap();
        in_step(&a).await;
        let token = claims_token("heidi", "h1");
        a.revoke_subject("heidi").await.unwrap();

        server.stop();
        server.restart();
        // A new instance learns every record from Redis.
        let c = Revocations::redis_with_prefix(&server.url(), &prefix("restart")).unwrap();
        in_step(&c).await;
        let on_c = instance(c.clone()).await;
        assert_eq!(status(on_c, &token).await, StatusCode::UNAUTHORIZED);
        open(on_c, &claims_token("heidi", "h2")).await;
    }
}
