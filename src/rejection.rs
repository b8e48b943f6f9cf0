//! Turning an [`AuthError`] into the response a refused upgrade receives.
//!
//! [`DefaultRejection`] answers with the error's status, the RFC 6750
//! `WWW-Authenticate` challenge, `Cache-Control: no-store` and a short text
//! body that never echoes the credential; the error itself goes into the
//! response extensions. Replace it with any `Fn(AuthError) -> Response<B>`.
//!
//! ```
//! use http::{Response, StatusCode};
//! use tower_ws_auth::{AuthError, AuthErrorKind, DefaultRejection, OnRejection};
//!
//! let response: Response<String> = DefaultRejection.on_rejection(AuthErrorKind::Invalid.into());
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(response.headers()["www-authenticate"], r#"Bearer error="invalid_token""#);
//! assert!(response.extensions().get::<AuthError>().is_some());
//!
//! // A replacement: every refusal is a bare 404.
//! let hide = |_err: AuthError| Response::builder().status(404).body(String::new()).unwrap();
//! assert_eq!(hide.on_rejection(AuthErrorKind::Missing.into()).status(), StatusCode::NOT_FOUND);
//! ```

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::Response;

use crate::error::AuthError;

/// Builds the response for a refused request.
pub trait OnRejection<B> {
    /// The response for `error`.
    fn on_rejection(&self, error: AuthError) -> Response<B>;
}

impl<F, B> OnRejection<B> for F
where
    F: Fn(AuthError) -> Response<B>,
{
    fn on_rejection(&self, error: AuthError) -> Response<B> {
        self(error)
    }
}

/// The default responder: status, `WWW-Authenticate`, no-store, a short
/// `text/plain` body, and the [`AuthError`] in the extensions.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultRejection;

impl<B> OnRejection<B> for DefaultRejection
where
    B: From<&'static str>,
{
    fn on_rejection(&self, error: AuthError) -> Response<B> {
        let mut response = Response::new(B::from(error.body_text()));
        *response.status_mut() = error.status();
        let headers = response.headers_mut();
        if let Some(challenge) = error.www_authenticate() {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response.extensions_mut().insert(error);
        response
    }
}
