//! `cargo run --example hyper --features tungstenite`: the same layer in front
//! of a plain hyper 1 server (hyper-util, tokio-tungstenite, no axum).
//!
//! Accepts `Authorization: Bearer <jwt>` and `Sec-WebSocket-Protocol:
//! bearer.<jwt>, chat`; prints a token to try it with, e.g.
//! `websocat -H "Authorization: Bearer $TOKEN" ws://127.0.0.1:3001/ws`.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tower::{service_fn, Layer};
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
use tower_ws_auth::source::{Bearer, Subprotocol};
use tower_ws_auth::{is_websocket_upgrade, Authenticated, ConfigError, WsAuthLayer};

type Body = Full<Bytes>;

fn respond(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}

/// The handler behind the layer: completes the handshake, greets the client
/// with the identity the layer verified, then echoes.
async fn handle(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if !is_websocket_upgrade(&req) {
        return Ok(respond(StatusCode::OK, "open a WebSocket on /ws"));
    }
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return Ok(respond(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key",
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let Some(auth) = req
        .extensions()
        .get::<Authenticated<BasicClaims>>()
        .cloned()
    else {
        return Ok(respond(StatusCode::INTERNAL_SERVER_ERROR, "no identity"));
    };
    // The layer removed the token entry: only real protocols are left.
    let chat = req
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "chat"));
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let welcome = serde_json::json!({
            "type": "welcome",
            "user": auth.identity.sub,
            "via": auth.via.as_str(),
        });
        if socket
            .send(Message::text(welcome.to_string()))
            .await
            .is_err()
        {
            return;
        }
        while let Some(Ok(message)) = socket.next().await {
            if message.is_text() && socket.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    if chat {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("chat"));
    }
    Ok(response)
}

/// Serve connections from `listener`, verifying HS256 tokens signed with `secret`.
pub async fn serve(listener: TcpListener, secret: &[u8]) -> Result<(), ConfigError> {
    let jwt = JwtVerifier::<BasicClaims>::hs256(secret)?;
    let service = WsAuthLayer::new(Bearer, jwt.clone())
        .or(Subprotocol::prefix("bearer."), jwt)
        .layer(service_fn(handle));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                eprintln!("connection error: {error}");
            }
        });
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("DEMO_JWT_SECRET")
        .unwrap_or_else(|_| "hyper-example-secret-of-32-bytes!".to_owned());
    let addr = std::env::var("HYPER_ADDR").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let listener = TcpListener::bind(&addr).await?;
    let claims = BasicClaims {
        sub: "alice".into(),
        exp: tower_ws_auth::jwt::now_secs() + 900,
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?;
    println!("listening on ws://{addr}/ws\ntry: Authorization: Bearer {token}");
    serve(listener, secret.as_bytes()).await?;
    Ok(())
}
