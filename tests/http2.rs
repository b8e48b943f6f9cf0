//! RFC 8441: a WebSocket over HTTP/2 extended CONNECT, against axum's server
//! (which turns the extended CONNECT protocol on), with a real HTTP/2 client.
#![cfg(all(
    feature = "axum",
    feature = "tungstenite",
    feature = "jwt",
    feature = "rust-crypto"
))]

mod common;

use axum::body::Body;
use axum::extract::ws::{Message as AxumMessage, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use common::*;
use futures_util::StreamExt;
use http::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
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

fn extended_connect(addr: std::net::SocketAddr, bearer: Option<&str>) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/ws"))
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13");
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Body::empty()).unwrap()
}

/// Send an extended CONNECT for `/ws`, with or without a bearer token.
async fn connect_h2(
    addr: std::net::SocketAddr,
    bearer: Option<&str>,
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
        match send.send_request(extended_connect(addr, bearer)).await {
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

    let refused = connect_h2(addr, None).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");

    let mut accepted = connect_h2(addr, Some(&token("alice", 60))).await;
    assert_eq!(accepted.status(), StatusCode::OK);
    let upgraded = hyper::upgrade::on(&mut accepted).await.unwrap();
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    let greeting = socket.next().await.unwrap().unwrap();
    assert_eq!(greeting, Message::text("hello alice"));
    let _ = socket.close(None).await;
}
