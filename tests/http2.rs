//! RFC 8441: a WebSocket over HTTP/2 extended CONNECT, against axum's server
//! (which turns the extended CONNECT protocol on) and against the demo as it
//! serves itself, with a real HTTP/2 client.
#![cfg(all(
    feature = "axum",
    feature = "tungstenite",
    feature = "jwt",
    feature = "rust-crypto"
))]

mod common;

#[allow(dead_code)]
#[path = "../examples/demo/app.rs"]
mod demo;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message as AxumMessage, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
use tower_ws_auth::source::Bearer;
use tower_ws_auth::{Authenticated, WsAuthLayer};

async fn greet(upgrade: WebSocketUpgrade, auth: Authenticated<BasicClaims>) -> Response {
    upgrade.on_upgrade(move |mut socket| async move {
        let _ = socket
            .send(AxumMessage::text(format!("hello {}", auth.identity.sub)))
            .await;
    })
}

fn extended_connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}{path}"))
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).unwrap()
}

/// Send an extended CONNECT for `path` with extra headers, on a connection
/// of its own.
async fn connect_h2(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> hyper::Response<hyper::body::Incoming> {
    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(io)
        .await
        .unwrap();
    tokio::spawn(connection);
    // Until the server's SETTINGS (extended CONNECT enabled) have arrived, the
    // client refuses to send the request: retry briefly.
    let mut last_error = String::new();
    for _ in 0..50 {
        send.ready().await.unwrap();
        match send
            .send_request(extended_connect(addr, path, headers))
            .await
        {
            Ok(response) => return response,
            Err(error) => last_error = error.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("extended CONNECT never went through: {last_error}");
}

#[tokio::test]
async fn websocket_over_http2_is_authenticated() {
    let jwt = JwtVerifier::<BasicClaims>::hs256(SECRET).unwrap();
    let app = Router::new()
        .route("/ws", any(greet))
        .layer(WsAuthLayer::new(Bearer, jwt));
    let addr = serve(app).await;

    let refused = connect_h2(addr, "/ws", &[]).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");

    let bearer = format!("Bearer {}", token("alice", 60));
    let mut accepted = connect_h2(addr, "/ws", &[("authorization", &bearer)]).await;
    assert_eq!(accepted.status(), StatusCode::OK);
    let upgraded = hyper::upgrade::on(&mut accepted).await.unwrap();
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    let greeting = socket.next().await.unwrap().unwrap();
    assert_eq!(greeting, Message::text("hello alice"));
    let _ = socket.close(None).await;
}

type H2Socket = WebSocketStream<TokioIo<Upgraded>>;

/// The WebSocket carried by an accepted extended CONNECT.
async fn websocket(mut accepted: hyper::Response<hyper::body::Incoming>) -> H2Socket {
    assert_eq!(accepted.status(), StatusCode::OK);
    let upgraded = hyper::upgrade::on(&mut accepted).await.unwrap();
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await
}

/// Next text frame as JSON, within 5 s.
async fn next_json_h2(socket: &mut H2Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame within 5 s")
            .expect("socket open")
            .expect("frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

async fn assert_echo_h2(socket: &mut H2Socket, text: &str) {
    socket.send(Message::text(text)).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("an echo within 5 s")
        .expect("socket open")
        .expect("frame");
    assert_eq!(echoed, Message::text(text));
}

/// The demo, served by its own server loop, over HTTP/2 cleartext: both
/// WebSocket routes answer an extended CONNECT, `/ws` authenticates it, and
/// a socket outlives the header-read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_over_http2() {
    let header_read_timeout = Duration::from_secs(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = demo::router(demo::Config {
        jwt_secret: demo::random_secret(),
        allowed_origins: vec![format!("http://127.0.0.1:{}", addr.port())],
        redis_url: None,
        max_sessions: demo::MAX_SESSIONS,
    })
    .unwrap();
    tokio::spawn(demo::serve(listener, router, header_read_timeout));
    let login = http(
        addr,
        "POST",
        "/login",
        &[("content-type", "application/json")],
        r#"{"user":"alice"}"#,
    )
    .await;
    assert_eq!(login.status, StatusCode::OK);
    let token = login.json()["token"].as_str().unwrap().to_owned();

    let refused = connect_h2(addr, "/ws", &[]).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let forged = connect_h2(addr, "/ws", &[("authorization", "Bearer not-a-jwt")]).await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    let bearer = format!("Bearer {token}");
    let mut socket = websocket(connect_h2(addr, "/ws", &[("authorization", &bearer)]).await).await;
    assert_eq!(
        next_json_h2(&mut socket).await,
        json!({"type": "welcome", "user": "alice", "via": "header"})
    );
    assert_echo_h2(&mut socket, "over h2").await;
    tokio::time::sleep(header_read_timeout + Duration::from_millis(500)).await;
    assert_echo_h2(&mut socket, "after the header-read timeout").await;

    let mut socket = websocket(connect_h2(addr, "/ws/first-message", &[]).await).await;
    socket
        .send(Message::text(
            json!({"type": "auth", "token": token}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json_h2(&mut socket).await,
        json!({"type": "auth_ok", "userId": "alice"})
    );
    assert_echo_h2(&mut socket, "first message over h2").await;
}
