//! First-message authentication and the lifetime guard over loopback, with a
//! real client, run against both adapters: axum's `WebSocket` and
//! tokio-tungstenite's `WebSocketStream`.
#![cfg(all(
    feature = "axum",
    feature = "tungstenite",
    feature = "jwt",
    feature = "rust-crypto"
))]

mod common;

use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::Path;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use common::*;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tower_ws_auth::first_message::{
    AuthProtocol, FirstMessageAuth, GraphqlTransportWs, JsonAuth, LifetimeGuard, MessageKind,
    WsMessage,
};
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
use tower_ws_auth::{AuthError, AuthErrorKind, Credential, Verified, Verifier};

const DEADLINE: Duration = Duration::from_millis(1000);

/// No leeway: these tests time the close at `exp` itself.
fn jwt() -> JwtVerifier<BasicClaims> {
    JwtVerifier::<BasicClaims>::hs256(SECRET)
        .unwrap()
        .leeway(Duration::ZERO)
}

/// JWT, except that `mallory` is authenticated but forbidden.
#[derive(Clone)]
struct Gatekeeper(JwtVerifier<BasicClaims>);

impl Verifier for Gatekeeper {
    type Identity = BasicClaims;
    type Future = Ready<Result<Verified<BasicClaims>, AuthError>>;

    fn verify(&self, credential: Credential) -> Self::Future {
        ready(
            self.0
                .verify_token(credential.expose_secret())
                .and_then(|v| {
                    if v.identity.sub == "mallory" {
                        Err(AuthErrorKind::Forbidden.into())
                    } else {
                        Ok(v)
                    }
                }),
        )
    }
}

/// Authenticate, then echo through the lifetime guard. One function for both
/// socket types.
async fn session<S, M, E, P>(socket: S, protocol: P)
where
    S: Stream<Item = Result<M, E>> + Sink<M> + Unpin,
    M: WsMessage,
    P: AuthProtocol + Clone,
{
    let auth = FirstMessageAuth::with_protocol(protocol.clone()).deadline(DEADLINE);
    let verifier = Gatekeeper(jwt());
    let Ok((verified, socket)) = auth.authenticate(socket, &verifier).await else {
        return;
    };
    let mut guard = LifetimeGuard::new(
        socket,
        &verified.identity,
        verified.expires_at,
        verifier,
        protocol,
    );
    while let Some(Ok(message)) = guard.next().await {
        let reply = match message.kind() {
            MessageKind::Text(text) => M::text(text.to_owned()),
            _ => continue,
        };
        if guard.send(reply).await.is_err() {
            break;
        }
    }
}

async fn axum_route(Path(preset): Path<String>, upgrade: WebSocketUpgrade) -> Response {
    let upgrade = if preset == "limited" {
        FirstMessageAuth::json().limit_upgrade(upgrade)
    } else {
        upgrade
    };
    upgrade.on_upgrade(move |socket| async move {
        if preset == "graphql" {
            session(socket, GraphqlTransportWs::new()).await
        } else {
            session(socket, JsonAuth).await
        }
    })
}

async fn axum_server() -> SocketAddr {
    serve(Router::new().route("/{preset}", get(axum_route))).await
}

async fn tungstenite_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut path = String::new();
                // The handshake callback's signature is tungstenite's.
                #[allow(clippy::result_large_err)]
                let callback = |req: &http::Request<()>, res| {
                    path = req.uri().path().to_owned();
                    Ok(res)
                };
                // Every socket is limited to 64 KiB (the demo's limit): above
                // the 16 KiB auth-message cap, so that the guard's own cap is
                // tested too.
                let config = FirstMessageAuth::json()
                    .max_len(64 * 1024)
                    .websocket_config();
                let Ok(socket) =
                    tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
                        .await
                else {
                    return;
                };
                if path == "/graphql" {
                    session(socket, GraphqlTransportWs::new()).await
                } else {
                    session(socket, JsonAuth).await
                }
            });
        }
    });
    addr
}

async fn servers() -> [(&'static str, SocketAddr); 2] {
    [
        ("axum", axum_server().await),
        ("tungstenite", tungstenite_server().await),
    ]
}

async fn open(addr: SocketAddr, preset: &str) -> Client {
    connect(addr, &format!("/{preset}"), &[]).await.unwrap().0
}

fn auth_message(token: &str) -> Message {
    Message::text(json!({"type": "auth", "token": token}).to_string())
}

#[tokio::test]
async fn json_success_then_echo() {
    for (kind, addr) in servers().await {
        let mut socket = open(addr, "json").await;
        socket
            .send(auth_message(&token("alice", 60)))
            .await
            .unwrap();
        let ok = next_json(&mut socket).await;
        assert_eq!(ok, json!({"type": "auth_ok", "userId": "alice"}), "{kind}");
        assert_echo(&mut socket, "hello").await;
    }
}

#[tokio::test]
async fn json_invalid_token_gets_auth_fail_and_4001() {
    for (kind, addr) in servers().await {
        let mut socket = open(addr, "json").await;
        socket.send(auth_message("forged")).await.unwrap();
        assert_eq!(
            next_json(&mut socket).await,
            json!({"type": "auth_fail"}),
            "{kind}"
        );
        assert_eq!(
            close_code(&mut socket, Duration::from_secs(2)).await,
            Some(4001),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn json_timeout_closes_at_the_deadline() {
    for (kind, addr) in servers().await {
        let mut socket = open(addr, "json").await;
        let started = Instant::now();
        assert_eq!(
            close_code(&mut socket, Duration::from_secs(3)).await,
            Some(4001),
            "{kind}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= DEADLINE - Duration::from_millis(50),
            "{kind}: closed early, {waited:?}"
        );
        assert!(
            waited < DEADLINE + Duration::from_millis(500),
            "{kind}: closed late, {waited:?}"
        );
    }
}

#[tokio::test]
async fn json_refuses_bad_first_messages_with_documented_codes() {
    let oversize = format!(r#"{{"type":"auth","token":"{}"}}"#, "a".repeat(17 * 1024));
    let cases = [
        ("oversize", Message::text(oversize), 4400),
        ("not JSON", Message::text("hello"), 4400),
        (
            "wrong shape",
            Message::text(r#"{"type":"auth","jwt":"x"}"#),
            4400,
        ),
        ("binary", Message::binary(vec![1, 2, 3]), 4400),
        (
            "data before auth",
            Message::text(r#"{"type":"chat","text":"hi"}"#),
            4001,
        ),
    ];
    for (kind, addr) in servers().await {
        for (what, message, code) in cases.clone() {
            let mut socket = open(addr, "json").await;
            socket.send(message).await.unwrap();
            assert_eq!(
                next_json(&mut socket).await,
                json!({"type": "auth_fail"}),
                "{kind}: {what}"
            );
            assert_eq!(
                close_code(&mut socket, Duration::from_secs(2)).await,
                Some(code),
                "{kind}: {what}"
            );
        }
    }
}

#[tokio::test]
async fn pings_before_auth_are_answered() {
    for (kind, addr) in servers().await {
        let mut socket = open(addr, "json").await;
        socket
            .send(Message::Ping(b"are you there".to_vec().into()))
            .await
            .unwrap();
        let pong = tokio::time::timeout(Duration::from_secs(2), socket.next())
            .await
            .expect("pong in time")
            .unwrap()
            .unwrap();
        assert_eq!(
            pong,
            Message::Pong(b"are you there".to_vec().into()),
            "{kind}"
        );
        socket
            .send(auth_message(&token("alice", 60)))
            .await
            .unwrap();
        assert_eq!(next_json(&mut socket).await["type"], "auth_ok", "{kind}");
    }
}

fn init(token: &str) -> Message {
    Message::text(
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}})
            .to_string(),
    )
}

#[tokio::test]
async fn graphql_transport_ws_success_and_every_close_code() {
    for (kind, addr) in servers().await {
        // Success, with a protocol ping answered and a pong allowed while
        // waiting.
        let mut socket = open(addr, "graphql").await;
        socket
            .send(Message::text(r#"{"type":"pong"}"#))
            .await
            .unwrap();
        socket
            .send(Message::text(r#"{"type":"ping"}"#))
            .await
            .unwrap();
        assert_eq!(
            next_json(&mut socket).await,
            json!({"type": "pong"}),
            "{kind}"
        );
        socket.send(init(&token("alice", 60))).await.unwrap();
        assert_eq!(
            next_json(&mut socket).await,
            json!({"type": "connection_ack"}),
            "{kind}"
        );
        assert_echo(&mut socket, r#"{"type":"subscribe","id":"1"}"#).await;
        // A second init: 4429.
        socket.send(init(&token("alice", 60))).await.unwrap();
        assert_eq!(
            close_code(&mut socket, Duration::from_secs(2)).await,
            Some(4429),
            "{kind}"
        );

        let cases = [
            ("bad message", Message::text("{not json"), 4400),
            // 4403, which graphql-ws retries with fresh connectionParams.
            ("unauthorized", init("forged"), 4403),
            ("expired", init(&expired_token("alice")), 4403),
            (
                "no token",
                Message::text(r#"{"type":"connection_init"}"#),
                4403,
            ),
            (
                "subscribe before ack",
                Message::text(r#"{"type":"subscribe","id":"1"}"#),
                4401,
            ),
            ("forbidden", init(&token("mallory", 60)), 4403),
        ];
        for (what, message, code) in cases {
            let mut socket = open(addr, "graphql").await;
            socket.send(message).await.unwrap();
            assert_eq!(
                close_code(&mut socket, Duration::from_secs(2)).await,
                Some(code),
                "{kind}: {what}"
            );
        }

        let mut socket = open(addr, "graphql").await;
        assert_eq!(
            close_code(&mut socket, Duration::from_secs(3)).await,
            Some(4408),
            "{kind}: timeout"
        );
    }
}

/// Authenticate with a token that expires in `ttl` seconds (whole seconds,
/// as `exp` is).
fn expired_token(sub: &str) -> String {
    hs256(&json!({"sub": sub, "exp": 1_000_000_000u64}), SECRET)
}

async fn authenticated(addr: SocketAddr, sub: &str, ttl: u64) -> Client {
    let mut socket = open(addr, "json").await;
    socket.send(auth_message(&token(sub, ttl))).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "auth_ok");
    socket
}

#[tokio::test]
async fn expiry_closes_an_idle_socket_with_4002() {
    for (kind, addr) in servers().await {
        let mut socket = authenticated(addr, "alice", 2).await;
        let started = Instant::now();
        assert_eq!(
            close_code(&mut socket, Duration::from_secs(4)).await,
            Some(4002),
            "{kind}"
        );
        // `exp` is whole seconds: at most 2 s, plus a busy machine's delay.
        assert!(started.elapsed() <= Duration::from_millis(3000), "{kind}");
    }
}

#[tokio::test]
async fn graphql_expiry_of_a_live_socket_closes_with_a_code_clients_retry_on() {
    for (kind, addr) in servers().await {
        let mut socket = open(addr, "graphql").await;
        socket.send(init(&token("alice", 2))).await.unwrap();
        assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
        assert_eq!(
            close_code(&mut socket, Duration::from_secs(5)).await,
            Some(4403),
            "{kind}"
        );
    }
}

/// Other payload shapes the ecosystem sends its token in.
#[tokio::test]
async fn graphql_reads_the_usual_payload_shapes() {
    let token = token("alice", 60);
    let payloads = [
        json!({"token": token}),
        json!({"authorization": token}),
        json!({"Authorization": format!("bearer {token}")}),
        json!({"headers": {"Authorization": format!("Bearer {token}")}}),
        json!({"headers": {"authorization": token}}),
    ];
    for (kind, addr) in servers().await {
        for payload in &payloads {
            let mut socket = open(addr, "graphql").await;
            let init = json!({"type": "connection_init", "payload": payload});
            socket.send(Message::text(init.to_string())).await.unwrap();
            assert_eq!(
                next_json(&mut socket).await,
                json!({"type": "connection_ack"}),
                "{kind}: {payload}"
            );
        }
    }
}

/// An auth message over the cap is refused unverified, even with a valid
/// token, and never reaches the application.
#[tokio::test]
async fn reauth_over_the_cap_is_refused_unverified() {
    for (kind, addr) in servers().await {
        let mut socket = authenticated(addr, "alice", 2).await;
        let oversize = json!({
            "type": "auth",
            "token": token("alice", 60),
            "pad": "x".repeat(40 * 1024),
        });
        socket
            .send(Message::text(oversize.to_string()))
            .await
            .unwrap();
        assert_eq!(
            next_json(&mut socket).await,
            json!({"type": "auth_fail"}),
            "{kind}"
        );
        // Not extended: the socket still closes at the first token's expiry.
        assert_eq!(
            close_code(&mut socket, Duration::from_secs(5)).await,
            Some(4002),
            "{kind}"
        );
    }
}

/// With the socket limits set to the cap, an oversize message is refused by
/// the WebSocket library as it arrives, not after 64 MiB were buffered: a
/// client streaming an endless fragmented message is cut off early.
#[tokio::test]
async fn socket_limits_refuse_an_oversize_message_as_it_arrives() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    for (kind, addr) in servers().await {
        let path = if kind == "axum" { "limited" } else { "json" };
        let mut socket = open(addr, path).await;
        // Fragments of 8 KiB, never finished: the server must give up long
        // before the 64 MiB a library buffers by default.
        let fragment = vec![b'x'; 8 * 1024];
        let mut refused = false;
        for i in 0..1024 {
            let opcode = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            let frame = Frame::message(fragment.clone(), opcode, false);
            if socket.send(Message::Frame(frame)).await.is_err() {
                refused = true;
                break;
            }
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), socket.next()).await
            {
                refused = true;
                break;
            }
        }
        assert!(refused, "{kind}: 8 MiB of one message were accepted");
    }
}

/// One decision for "is this an auth message": an escaped `type` is still
/// an auth message (intercepted, answered), and the application's own array
/// that starts with "auth" is application data (echoed).
#[tokio::test]
async fn the_guard_and_the_parser_agree_on_auth_messages() {
    for (kind, addr) in servers().await {
        let mut socket = authenticated(addr, "alice", 60).await;
        let escaped = format!(r#"{{"type":"auth","token":"{}"}}"#, token("alice", 60));
        socket.send(Message::text(escaped)).await.unwrap();
        assert_eq!(
            next_json(&mut socket).await,
            json!({"type": "auth_ok", "userId": "alice"}),
            "{kind}"
        );
        assert_echo(&mut socket, r#"["auth","hello"]"#).await;
        socket
            .send(Message::text(r#"{"type":"auth","token":7}"#))
            .await
            .unwrap();
        assert_eq!(
            next_json(&mut socket).await,
            json!({"type": "auth_fail"}),
            "{kind}"
        );
        assert_echo(&mut socket, "still here").await;
    }
}

/// A client that floods auth messages and never reads: the guard stops
/// reading while its replies cannot be written, so the client's own sends
/// end up blocked instead of the server queueing replies without bound.
#[tokio::test]
async fn a_client_that_never_reads_is_held_back() {
    for (kind, addr) in servers().await {
        let mut socket = authenticated(addr, "alice", 600).await;
        let flood = Message::text(r#"{"type":"auth","token":"x"}"#);
        let mut blocked = false;
        // About 30 MB at most; the socket buffers on both sides hold a few.
        for _ in 0..1_000_000 {
            match tokio::time::timeout(Duration::from_secs(3), socket.send(flood.clone())).await {
                Ok(sent) => sent.unwrap(),
                Err(_) => {
                    blocked = true;
                    break;
                }
            }
        }
        assert!(
            blocked,
            "{kind}: the server kept reading a client that never reads"
        );
    }
}

#[tokio::test]
async fn reauth_extends_and_other_subjects_are_refused() {
    for (kind, addr) in servers().await {
        let mut extended = authenticated(addr, "alice", 2).await;
        let mut impostor = authenticated(addr, "alice", 2).await;

        extended
            .send(auth_message(&token("alice", 60)))
            .await
            .unwrap();
        assert_eq!(
            next_json(&mut extended).await,
            json!({"type": "auth_ok", "userId": "alice"}),
            "{kind}"
        );
        impostor
            .send(auth_message(&token("bob", 60)))
            .await
            .unwrap();
        assert_eq!(
            next_json(&mut impostor).await,
            json!({"type": "auth_fail"}),
            "{kind}"
        );

        // The refused one still closes at the original expiry ...
        assert_eq!(
            close_code(&mut impostor, Duration::from_secs(4)).await,
            Some(4002),
            "{kind}"
        );
        // ... while the extended one outlives it, and the application never
        // saw the auth message (the echo is the first thing that comes back).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_echo(&mut extended, "still here").await;
    }
}
