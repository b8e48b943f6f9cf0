//! WebSocket authentication as tower layers.
//!
//! A browser's `WebSocket` cannot set request headers, so the
//! `Authorization: Bearer` header that protects every other route is not
//! available to it. This crate authenticates the upgrade request from wherever
//! the client can put a credential, removes the credential before your handler
//! (and your logs) see it, and hands the handler a verified identity.
//!
//! # Which pattern for which client
//!
//! | client | pattern | source | verifier |
//! |---|---|---|---|
//! | browser SPA holding a JWT | one-time ticket from an authenticated `POST`, then `wss://…/ws?ticket=…` | [`Query::param("ticket")`](source::Query::param) | a [`ticket`] store's verifier |
//! | session-cookie web app | the cookie the browser sends anyway, plus an `Origin` check | [`Cookie::named("session")`](source::Cookie::named) | a session look-up closure |
//! | native (mobile, CLI, server) | `Authorization: Bearer <jwt>` | [`Bearer`](source::Bearer) | [`JwtVerifier`](jwt::JwtVerifier) |
//! | browser, no extra round-trip | `new WebSocket(url, ["bearer." + jwt, "chat"])` | [`Subprotocol::prefix("bearer.")`](source::Subprotocol::prefix) | [`JwtVerifier`](jwt::JwtVerifier) |
//! | any, token never in the handshake | first message `{"type":"auth","token":…}` | [`first_message::FirstMessageAuth`] | any verifier |
//!
//! Logout, bans and password changes reach sockets that are already open
//! through [`revocation`]; tokens from an OpenID provider verify with
//! `oidc::OidcVerifier` (feature `oidc`).
//!
//! # One layer, several sources
//!
//! ```
//! # #[cfg(all(feature = "jwt", feature = "rust-crypto"))] {
//! use std::future::{ready, Ready};
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
//! use tower_ws_auth::source::{Bearer, Cookie, Subprotocol};
//! use tower_ws_auth::{AuthError, AuthErrorKind, Credential, Verified, WsAuthLayer};
//!
//! let jwt = JwtVerifier::<BasicClaims>::hs256(b"0123456789abcdef0123456789abcdef").unwrap();
//! let sessions = |c: Credential| -> Ready<Result<Verified<BasicClaims>, AuthError>> {
//!     ready(if c.ct_eq("s1") {
//!         Ok(Verified::new(BasicClaims { sub: "alice".into(), exp: u64::MAX }))
//!     } else {
//!         Err(AuthErrorKind::Invalid.into())
//!     })
//! };
//! let layer = WsAuthLayer::new(Bearer, jwt.clone())
//!     .or(Cookie::named("session"), sessions) // turns the Origin check on
//!     .or(Subprotocol::prefix("bearer."), jwt);
//!
//! let app = layer.layer(service_fn(|_req: Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(String::from("upgraded")))
//! }));
//! let upgrade = || {
//!     Request::get("/ws")
//!         .header("host", "app.example")
//!         .header("upgrade", "websocket")
//!         .header("connection", "upgrade")
//!         .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
//! };
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let same_site = upgrade().header("origin", "https://app.example").header("cookie", "session=s1");
//! let response = app.clone().oneshot(same_site.body(()).unwrap()).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! let cross_site = upgrade().header("origin", "https://evil.example").header("cookie", "session=s1");
//! let response = app.clone().oneshot(cross_site.body(()).unwrap()).await.unwrap();
//! assert_eq!(response.status(), StatusCode::FORBIDDEN);
//!
//! let response = app.oneshot(upgrade().body(()).unwrap()).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! # });
//! # }
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `jwt` | yes | [`jwt::JwtVerifier`] over `jsonwebtoken` |
//! | `rust-crypto` | yes | jsonwebtoken's pure-Rust crypto backend |
//! | `aws-lc-rs` | no | jsonwebtoken's aws-lc backend (wins when both are on) |
//! | `axum` | yes | the [`Authenticated`] extractor, the ticket-issuing handler, the axum `WebSocket` adapter |
//! | `tungstenite` | no | the tokio-tungstenite `WebSocketStream` adapter |
//! | `redis` | no | a Redis-backed ticket store and revocations shared by several server instances |
//! | `metrics` | no | counters and a gauge on the `metrics` facade (names in the README) |
//! | `oidc` | no | [`oidc::OidcVerifier`]: tokens from OpenID providers, keys by discovery and JWKS, rotated with the provider |
//!
//! # Security
//!
//! - Query parameters reach access logs: only one-time tickets belong there.
//!   Log URIs with a [`Redactor`] when the logging layer is outside this one.
//! - Cookie authentication needs an `Origin` check against Cross-Site
//!   WebSocket Hijacking; it is on by default when a cookie source is used.
//! - Credentials are capped (8 KiB) before they are parsed, compared in
//!   constant time, never printed (`Debug` shows `[redacted]`) and removed from
//!   the request the inner service sees.
//! - A verification backend that cannot be reached refuses the connection
//!   (503): authentication fails closed.
//! - Explicit credentials (header, ticket, subprotocol) belong before the
//!   ambient cookie in a chain of sources; the layer warns otherwise.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod authenticate;
mod credential;
mod error;
#[cfg(feature = "axum")]
mod extract;
pub mod first_message;
pub mod layer;
mod metrics;
mod origin;
mod rejection;
pub mod revocation;
pub mod source;
pub mod ticket;
mod verify;

#[cfg(feature = "jwt")]
pub mod jwt;
#[cfg(feature = "oidc")]
pub mod oidc;

/// The README's snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use crate::credential::{Credential, SourceKind};
pub use crate::error::{AuthError, AuthErrorKind, ConfigError};
#[cfg(feature = "axum")]
pub use crate::extract::MissingAuthenticated;
pub use crate::layer::{
    is_websocket_upgrade, Authenticated, Redactor, WsAuth, WsAuthLayer,
    WELL_KNOWN_CREDENTIAL_PARAMS,
};
pub use crate::origin::OriginPolicy;
pub use crate::rejection::{DefaultRejection, OnRejection};
pub use crate::verify::{
    MapIdentity, MapIdentityFuture, Require, RequireFuture, Subject, Verification, Verified,
    Verifier, VerifierExt,
};
