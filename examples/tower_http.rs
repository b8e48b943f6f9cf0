//! `cargo run --example tower_http`: the layer stacked with tower-http.
//!
//! - `TraceLayer` outside everything, logging each request's URI through the
//!   layer's `Redactor`, so a `?ticket=` never reaches the log;
//! - the app's existing HTTP auth (`AsyncRequireAuthorizationLayer`, checking
//!   a bearer JWT) on the plain HTTP routes, including the ticket endpoint,
//!   which reads the identity (with its token's expiry) that auth layer
//!   inserted;
//! - `WsAuthLayer` redeeming one-time tickets on `/ws`.

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use http::header::AUTHORIZATION;
use http::StatusCode;
use tower_http::auth::AsyncRequireAuthorizationLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_ws_auth::first_message::{JsonAuth, LifetimeGuard};
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
use tower_ws_auth::source::Query;
use tower_ws_auth::ticket::{MemoryTicketStore, TicketEndpoint, TicketStore};
use tower_ws_auth::{Authenticated, ConfigError, Verified, WsAuthLayer};
use tracing::Level;

/// The application.
pub fn app(secret: &[u8]) -> Result<Router, ConfigError> {
    let jwt = JwtVerifier::<BasicClaims>::hs256(secret)?;
    let jwt_for_guard = jwt.clone();
    let tickets = MemoryTicketStore::<BasicClaims>::new();

    // The app's existing HTTP auth: a bearer JWT, identity into extensions.
    let http_auth = AsyncRequireAuthorizationLayer::new(move |mut req: Request| {
        let jwt = jwt.clone();
        async move {
            let token = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match token.map(|t| jwt.verify_token(t)) {
                Some(Ok(verified)) => {
                    // The identity with its token's expiry: a ticket bought
                    // with this token never outlives it.
                    req.extensions_mut().insert(verified);
                    Ok(req)
                }
                _ => Err(StatusCode::UNAUTHORIZED.into_response()),
            }
        }
    });

    let ws_auth = WsAuthLayer::new(Query::param("ticket"), tickets.verifier());
    let redactor = ws_auth.redactor();

    let api = Router::new()
        .route(
            "/api/me",
            get(|me: axum::Extension<Verified<BasicClaims>>| async move { me.0.identity.sub }),
        )
        .route("/ws-ticket", post(TicketEndpoint::new(tickets)))
        .layer(http_auth);
    let guard_verifier = jwt_for_guard;
    let ws = Router::new()
        .route(
            "/ws",
            get(move |upgrade, auth| greet(upgrade, auth, guard_verifier.clone())),
        )
        .layer(ws_auth);

    Ok(api.merge(ws).layer(
        TraceLayer::new_for_http()
            .make_span_with(move |req: &Request| {
                tracing::info_span!("request", method = %req.method(), uri = %redactor.uri(req.uri()))
            })
            .on_request(|_: &Request, _: &tracing::Span| tracing::info!("started"))
            .on_response(DefaultOnResponse::new().level(Level::INFO)),
    ))
}

/// Greets, then keeps the socket open until the token that bought the ticket
/// expires (the guard closes it with 4002) or the client leaves.
async fn greet(
    upgrade: WebSocketUpgrade,
    auth: Authenticated<BasicClaims>,
    jwt: JwtVerifier<BasicClaims>,
) -> Response {
    upgrade.on_upgrade(move |socket| async move {
        let mut socket = LifetimeGuard::new(socket, &auth.identity, auth.expires_at, jwt, JsonAuth);
        let hello = Message::text(format!("hello {}", auth.identity.sub));
        if socket.send(hello).await.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    })
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let secret = std::env::var("DEMO_JWT_SECRET")
        .unwrap_or_else(|_| "tower-http-example-secret-32-bytes".to_owned());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3002").await?;
    tracing::info!("listening on http://127.0.0.1:3002");
    axum::serve(listener, app(secret.as_bytes())?).await?;
    Ok(())
}
