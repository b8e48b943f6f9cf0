//! A user's own claims type, a claims check per route (403 with
//! `insufficient_scope`), identities of different types in one layer, and
//! tickets issued behind any other authentication — over loopback with a
//! real WebSocket client.
#![cfg(all(feature = "axum", feature = "jwt", feature = "rust-crypto"))]

mod common;

use std::future::{ready, Ready};
use std::time::{Duration, SystemTime};

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use common::*;
use http::request::Parts;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tower_ws_auth::jwt::{JwtClaims, JwtVerifier};
use tower_ws_auth::source::{Bearer, Cookie, Query};
use tower_ws_auth::ticket::{MemoryTicketStore, TicketEndpoint, TicketStore};
use tower_ws_auth::{
    AuthError, AuthErrorKind, Authenticated, Credential, OriginPolicy, Verified, VerifierExt,
    WsAuthLayer,
};

/// An application's own claims: nothing beyond serde and `JwtClaims`.
#[derive(Clone, Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scope: String,
    tenant: String,
}

impl JwtClaims for Claims {
    fn subject(&self) -> &str {
        &self.sub
    }
    fn expires_at(&self) -> Option<u64> {
        Some(self.exp)
    }
}

fn claims_token(roles: &[&str], scope: &str, tenant: &str) -> String {
    hs256(
        &json!({"sub": "alice", "exp": now() + 60, "roles": roles, "scope": scope, "tenant": tenant}),
        SECRET,
    )
}

async fn hello(upgrade: WebSocketUpgrade, auth: Authenticated<Claims>) -> Response {
    upgrade.on_upgrade(move |mut socket| async move {
        let seen = json!({"user": auth.identity.sub, "tenant": auth.identity.tenant});
        let _ = socket.send(Message::text(seen.to_string())).await;
    })
}

#[tokio::test]
async fn custom_claims_and_a_claims_check() {
    let jwt = JwtVerifier::<Claims>::hs256(SECRET)
        .unwrap()
        .require(|c: &Claims| {
            c.roles.iter().any(|r| r == "chat") && c.scope.split(' ').any(|s| s == "ws:connect")
        });
    let app = Router::new().route("/ws", get(hello).route_layer(WsAuthLayer::new(Bearer, jwt)));
    let addr = serve(app).await;

    let good = claims_token(&["chat"], "profile ws:connect", "acme");
    let (mut socket, _) = connect(addr, "/ws", &[("authorization", &format!("Bearer {good}"))])
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut socket).await,
        json!({"user": "alice", "tenant": "acme"})
    );

    for (roles, scope) in [(&["viewer"][..], "ws:connect"), (&["chat"][..], "profile")] {
        let token = claims_token(roles, scope, "acme");
        let refused = refused(
            addr,
            "/ws",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{roles:?} {scope}");
        assert_eq!(
            refused.headers["www-authenticate"],
            r#"Bearer error="insufficient_scope""#
        );
    }
    // A bad token is still 401, not 403: the check runs on verified claims.
    let forged = hs256(
        &json!({"sub": "alice", "exp": now() + 60, "roles": ["chat"], "scope": "ws:connect", "tenant": "acme"}),
        b"another-secret-of-thirty-two-bytes",
    );
    let refused = refused(
        addr,
        "/ws",
        &[("authorization", &format!("Bearer {forged}"))],
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

/// Who is connecting: a token holder or a session user, in one type.
#[derive(Clone, Debug)]
enum User {
    Token(Claims),
    Session { name: String },
}

async fn who(upgrade: WebSocketUpgrade, auth: Authenticated<User>) -> Response {
    upgrade.on_upgrade(move |mut socket| async move {
        let seen = match &auth.identity {
            User::Token(claims) => format!("token {}", claims.sub),
            User::Session { name } => format!("session {name}"),
        };
        let _ = socket.send(Message::text(seen)).await;
    })
}

#[tokio::test]
async fn a_jwt_and_a_session_lookup_of_different_types_share_one_layer() {
    let jwt = JwtVerifier::<Claims>::hs256(SECRET).unwrap();
    let sessions = |c: Credential| -> Ready<Result<Verified<String>, AuthError>> {
        ready(if c.ct_eq("s1") {
            Ok(Verified::new("bob".to_owned()))
        } else {
            Err(AuthErrorKind::Invalid.into())
        })
    };
    let layer = WsAuthLayer::new(Bearer, jwt.map_identity(User::Token))
        .or(
            Cookie::named("session"),
            sessions.map_identity(|name| User::Session { name }),
        )
        .origin(OriginPolicy::any().require_origin(false));
    let addr = serve(Router::new().route("/ws", get(who).route_layer(layer))).await;

    let token = claims_token(&[], "", "acme");
    let (mut socket, _) = connect(
        addr,
        "/ws",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap();
    assert_eq!(next_text(&mut socket).await, "token alice");
    let (mut socket, _) = connect(addr, "/ws", &[("cookie", "session=s1")])
        .await
        .unwrap();
    assert_eq!(next_text(&mut socket).await, "session bob");
    let refused = refused(addr, "/ws", &[("cookie", "session=nope")]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

/// An app's own session layer put this in the extensions.
#[derive(Clone)]
struct SessionUser {
    name: String,
    ends: SystemTime,
}

#[tokio::test]
async fn tickets_behind_any_existing_auth_through_a_closure() {
    let tickets = MemoryTicketStore::<String>::new();
    let endpoint = TicketEndpoint::new(tickets.clone()).identify(|parts: &Parts| {
        let user = parts.extensions.get::<SessionUser>().cloned();
        async move { user.map(|u| Verified::new(u.name).expires_at(u.ends)) }
    });
    // Stands in for the app's session middleware: a `session=s1` cookie
    // means bob, whose session ends in 3 seconds.
    let sessions = axum::middleware::from_fn(
        |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
            let cookie = req.headers().get("cookie").and_then(|c| c.to_str().ok());
            if cookie == Some("session=s1") {
                req.extensions_mut().insert(SessionUser {
                    name: "bob".into(),
                    ends: SystemTime::now() + Duration::from_secs(3),
                });
            }
            next.run(req).await
        },
    );
    let greet = |upgrade: WebSocketUpgrade, auth: Authenticated<String>| async move {
        let expires_in = auth
            .expires_at
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .map(|d| d.as_secs());
        upgrade.on_upgrade(move |mut socket| async move {
            let seen = json!({"user": auth.identity, "expires_in": expires_in});
            let _ = socket.send(Message::text(seen.to_string())).await;
        })
    };
    let app = Router::new()
        .route("/ws-ticket", post(endpoint).layer(sessions))
        .route(
            "/ws",
            get(greet).route_layer(WsAuthLayer::new(Query::param("ticket"), tickets.verifier())),
        );
    let addr = serve(app).await;

    let anonymous = http(addr, "POST", "/ws-ticket", &[], "").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let issued = http(addr, "POST", "/ws-ticket", &[("cookie", "session=s1")], "").await;
    assert_eq!(issued.status, StatusCode::OK);
    let body = issued.json();
    assert!(body["expires_in"].as_u64().unwrap() <= 3, "{body}");
    let ticket = body["ticket"].as_str().unwrap();
    let (mut socket, _) = connect(addr, &format!("/ws?ticket={ticket}"), &[])
        .await
        .unwrap();
    let seen = next_json(&mut socket).await;
    assert_eq!(seen["user"], "bob");
    // The socket knows the session's end, not a ticket's 30 s or "never".
    assert!(seen["expires_in"].as_u64().unwrap() <= 3, "{seen}");
}
