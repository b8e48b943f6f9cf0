//! `cargo run --example tower_http`: the layer stacked with tower-http.
//!
//! - `TraceLayer` outside everything, logging each request's URI through the
//!   layer's `Redactor`, so a `?ticket=` never reaches the log;
//! - the app's existing HTTP auth (`AsyncRequireAuthorizationLayer`, checking
//!   a bearer JWT) on the plain HTTP routes, including the ticket endpoint,
//!   which reads the identity that auth layer inserted;
//! - `WsAuthLayer` redeeming one-time tickets on `/ws`.

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::header::AUTHORIZATION;
use http::StatusCode;
use tower_http::auth::AsyncRequireAuthorizationLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
use tower_ws_auth::source::Query;
use tower_ws_auth::ticket::{MemoryTicketStore, TicketEndpoint, TicketStore};
use tower_ws_auth::{Authenticated, ConfigError, WsAuthLayer};
use tracing::Level;

/// The application.
pub fn app(secret: &[u8]) -> Result<Router, ConfigError> {
    let jwt = JwtVerifier::<BasicClaims>::hs256(secret)?;
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
                    req.extensions_mut().insert(verified.identity);
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
            get(|claims: axum::Extension<BasicClaims>| async move { claims.0.sub }),
        )
        .route("/ws-ticket", post(TicketEndpoint::new(tickets)))
        .layer(http_auth);
    let ws = Router::new().route("/ws", get(greet)).layer(ws_auth);

    Ok(api.merge(ws).layer(
        TraceLayer::new_for_http()
            .make_span_with(move |req: &Request| {
                tracing::info_span!("request", method = %req.method(), uri = %redactor.uri(req.uri()))
            })
            .on_request(|_: &Request, _: &tracing::Span| tracing::info!("started"))
            .on_response(DefaultOnResponse::new().level(Level::INFO)),
    ))
}

async fn greet(upgrade: WebSocketUpgrade, auth: Authenticated<BasicClaims>) -> Response {
    upgrade.on_upgrade(move |mut socket| async move {
        let _ = socket
            .send(Message::text(format!("hello {}", auth.identity.sub)))
            .await;
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
