//! The axum extractor for the verified identity.
//!
//! `Authenticated<I>` extracts the identity the layer inserted; a handler on a
//! route without the layer fails loudly with 500 and a message naming the
//! layer. `Option<Authenticated<I>>` suits layers in
//! [`optional`](crate::WsAuthLayer::optional) mode.
//!
//! ```
//! use axum::{body::Body, routing::get, Router};
//! use http::{Request, StatusCode};
//! use tower::ServiceExt;
//! use tower_ws_auth::Authenticated;
//!
//! async fn whoami(user: Authenticated<String>) -> String {
//!     user.identity
//! }
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // The layer normally inserts this; here a request carries it by hand.
//! let mut request = Request::get("/").body(Body::empty()).unwrap();
//! request.extensions_mut().insert(Authenticated {
//!     identity: "alice".to_owned(),
//!     via: tower_ws_auth::SourceKind::Header,
//!     expires_at: None,
//! });
//! let app = Router::new().route("/", get(whoami));
//! let ok = app.clone().oneshot(request).await.unwrap();
//! assert_eq!(ok.status(), StatusCode::OK);
//!
//! // Without the layer: 500, and the body says what is missing.
//! let missing = app.oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(missing.status(), StatusCode::INTERNAL_SERVER_ERROR);
//! # });
//! ```

use std::any::type_name;
use std::convert::Infallible;
use std::fmt;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::layer::Authenticated;

impl<S, I> FromRequestParts<S> for Authenticated<I>
where
    I: Clone + Send + Sync + 'static,
    S: Send + Sync,
{
    type Rejection = MissingAuthenticated;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Authenticated<I>>()
            .cloned()
            .ok_or(MissingAuthenticated {
                identity: type_name::<I>(),
            })
    }
}

impl<S, I> OptionalFromRequestParts<S> for Authenticated<I>
where
    I: Clone + Send + Sync + 'static,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Authenticated<I>>().cloned())
    }
}

/// Rejection of the [`Authenticated`] extractor: the request carries no
/// identity of that type, which means the route is not behind a
/// [`WsAuthLayer`](crate::WsAuthLayer) producing it. A server bug, hence 500.
#[derive(Debug)]
pub struct MissingAuthenticated {
    identity: &'static str,
}

impl MissingAuthenticated {
    /// Always 500.
    pub fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    /// What is missing and how to fix it.
    pub fn body_text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for MissingAuthenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Missing request extension: `Authenticated<{}>` was not found. \
             Is `WsAuthLayer` applied to this route, with a verifier producing `{}`? \
             (A layer in `optional()` mode needs `Option<Authenticated<_>>`.)",
            self.identity, self.identity
        )
    }
}

impl std::error::Error for MissingAuthenticated {}

impl IntoResponse for MissingAuthenticated {
    fn into_response(self) -> Response {
        tracing::error!(
            missing = self.identity,
            "identity extractor used without WsAuthLayer"
        );
        (self.status(), self.body_text()).into_response()
    }
}
