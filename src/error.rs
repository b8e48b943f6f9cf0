//! Errors: [`AuthError`] for a refused connection, [`ConfigError`] for a bad
//! configuration caught when the layer is built.
//!
//! An [`AuthError`] knows how to become an HTTP response (see
//! [`DefaultRejection`](crate::DefaultRejection)) and a WebSocket close code (see
//! [`AuthError::close_code`]). Neither its `Display` nor its `Debug` ever carries
//! the credential.
//!
//! ```
//! use tower_ws_auth::{AuthError, AuthErrorKind};
//!
//! let err = AuthError::new(AuthErrorKind::Expired);
//! assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
//! assert_eq!(err.close_code(), 4002);
//! assert!(err.is_retryable());
//!
//! let err = AuthError::new(AuthErrorKind::OriginRejected);
//! assert_eq!(err.status(), http::StatusCode::FORBIDDEN);
//! assert!(!err.is_retryable());
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use http::StatusCode;

use crate::credential::SourceKind;

/// Why a connection was refused.
///
/// Every variant maps to one HTTP status (for the upgrade request) and one
/// WebSocket close code (for first-message auth and the lifetime guard).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthErrorKind {
    /// No credential was presented. 401 with `WWW-Authenticate: Bearer`; close 4001.
    Missing,
    /// The request carrying the credential is malformed: a credential that is not
    /// valid percent-encoding or UTF-8, a subprotocol token offered without an
    /// application protocol. 400 `invalid_request`; close 4400.
    Malformed,
    /// The credential was found more than once (two `ticket` parameters, two
    /// `Authorization` headers, two cookies of the same name, two subprotocol
    /// tokens). 400 `invalid_request`; close 4400.
    Ambiguous,
    /// The credential is larger than the configured cap and was not parsed.
    /// 400 `invalid_request`; close 4400.
    TooLarge,
    /// The credential was present but is not valid: bad signature, wrong key,
    /// wrong `aud`/`iss`, `nbf` in the future, unknown or already redeemed ticket,
    /// a header that is empty or not `Bearer`. 401 `invalid_token`; close 4001.
    /// Not retryable with the same credential.
    Invalid,
    /// The credential was valid once but has expired. 401 `invalid_token`;
    /// close 4002. Retryable: obtain a fresh credential and reconnect.
    Expired,
    /// The credential was revoked: logout, a ban, a password change (see
    /// [`revocation`](crate::revocation)). 401 `invalid_token`; close 4003.
    /// Not retryable with the same credential.
    Revoked,
    /// The credential is valid but the identity may not use this endpoint.
    /// 403; close 4003.
    Forbidden,
    /// The credential is valid but lacks what this endpoint requires (a role,
    /// a scope, a tenant), as a claims check such as
    /// [`VerifierExt::require`](crate::VerifierExt::require) decided. 403 with
    /// `WWW-Authenticate: Bearer error="insufficient_scope"` ([RFC 6750
    /// §3.1]); close 4003.
    ///
    /// [RFC 6750 §3.1]: https://www.rfc-editor.org/rfc/rfc6750#section-3.1
    InsufficientScope,
    /// The request's `Origin` is not allowed (Cross-Site WebSocket Hijacking
    /// defence, [RFC 6455 §10.2]). 403; close 4003.
    ///
    /// [RFC 6455 §10.2]: https://www.rfc-editor.org/rfc/rfc6455#section-10.2
    OriginRejected,
    /// The backend needed to verify the credential (ticket store, session store,
    /// key set) could not be reached. The connection is refused: authentication
    /// fails closed. 503; close 1013 (Try Again Later). Retryable.
    Unavailable,
    /// The client did not authenticate within the deadline (first-message auth).
    /// Close 4008 (4001 in the JSON preset).
    Timeout,
    /// Too many outstanding tickets (in total or for this identity). 429; close
    /// 4429. Retryable after redeeming or letting tickets expire.
    LimitReached,
}

impl AuthErrorKind {
    /// A short, stable, lowercase name, used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Ambiguous => "ambiguous",
            Self::TooLarge => "too_large",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Forbidden => "forbidden",
            Self::InsufficientScope => "insufficient_scope",
            Self::OriginRejected => "origin_rejected",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::LimitReached => "limit_reached",
        }
    }
}

impl fmt::Display for AuthErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused authentication.
///
/// Opaque: inspect it with [`kind`](Self::kind), [`via`](Self::via),
/// [`status`](Self::status) and [`close_code`](Self::close_code). The rejection
/// response carries a clone of it in its extensions, so an outer layer can log
/// or count refusals.
#[derive(Clone)]
pub struct AuthError {
    kind: AuthErrorKind,
    via: Option<SourceKind>,
    detail: Option<&'static str>,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl AuthError {
    /// An error of this kind.
    pub fn new(kind: AuthErrorKind) -> Self {
        Self {
            kind,
            via: None,
            detail: None,
            source: None,
        }
    }

    /// An [`Unavailable`](AuthErrorKind::Unavailable) error wrapping the backend's
    /// error, so it shows in [`source`](StdError::source). Make sure the wrapped
    /// error does not print a credential.
    pub fn unavailable(source: impl StdError + Send + Sync + 'static) -> Self {
        Self::new(AuthErrorKind::Unavailable).with_source(source)
    }

    /// Attach the underlying error.
    #[must_use]
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Attach a fixed explanation, shown by `Display` and in the default
    /// rejection's body. Static so that a credential cannot end up in it.
    #[must_use]
    pub fn with_detail(mut self, detail: &'static str) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Record where the refused credential came from.
    #[must_use]
    pub fn with_via(mut self, via: SourceKind) -> Self {
        self.via = Some(via);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> AuthErrorKind {
        self.kind
    }

    /// Where the refused credential came from, when one was found.
    pub fn via(&self) -> Option<SourceKind> {
        self.via
    }

    /// The HTTP status a refused upgrade answers with.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            AuthErrorKind::Missing
            | AuthErrorKind::Invalid
            | AuthErrorKind::Expired
            | AuthErrorKind::Revoked => StatusCode::UNAUTHORIZED,
            AuthErrorKind::Malformed | AuthErrorKind::Ambiguous | AuthErrorKind::TooLarge => {
                StatusCode::BAD_REQUEST
            }
            AuthErrorKind::Forbidden
            | AuthErrorKind::InsufficientScope
            | AuthErrorKind::OriginRejected => StatusCode::FORBIDDEN,
            AuthErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AuthErrorKind::Timeout => StatusCode::REQUEST_TIMEOUT,
            AuthErrorKind::LimitReached => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The `WWW-Authenticate` challenge for this error ([RFC 6750 §3]), if the
    /// status calls for one.
    ///
    /// [RFC 6750 §3]: https://www.rfc-editor.org/rfc/rfc6750#section-3
    pub fn www_authenticate(&self) -> Option<&'static str> {
        match self.kind {
            // §3.1: no error code when the request lacks any authentication.
            AuthErrorKind::Missing => Some("Bearer"),
            AuthErrorKind::Invalid => Some("Bearer error=\"invalid_token\""),
            AuthErrorKind::Expired => Some(
                "Bearer error=\"invalid_token\", error_description=\"the credential has expired\"",
            ),
            AuthErrorKind::Revoked => Some(
                "Bearer error=\"invalid_token\", error_description=\"the credential has been revoked\"",
            ),
            AuthErrorKind::Malformed | AuthErrorKind::Ambiguous | AuthErrorKind::TooLarge => {
                Some("Bearer error=\"invalid_request\"")
            }
            AuthErrorKind::InsufficientScope => Some("Bearer error=\"insufficient_scope\""),
            _ => None,
        }
    }

    /// The WebSocket close code for this error, for refusals that happen after
    /// the upgrade. Codes 4000–4999 are private use ([RFC 6455 §7.4.2]).
    ///
    /// | code | meaning | retry? |
    /// |---|---|---|
    /// | 4001 | missing or invalid credential | no, not with the same credential |
    /// | 4002 | credential expired | yes, with a fresh credential |
    /// | 4003 | revoked, or forbidden (identity, scope or origin) | not with the same credential |
    /// | 4008 | authentication deadline passed | yes |
    /// | 4400 | malformed, ambiguous or oversize auth message | no |
    /// | 4429 | too many outstanding tickets | yes, later |
    /// | 1013 | verification backend unavailable | yes, after a delay |
    ///
    /// [RFC 6455 §7.4.2]: https://www.rfc-editor.org/rfc/rfc6455#section-7.4.2
    pub fn close_code(&self) -> u16 {
        match self.kind {
            AuthErrorKind::Missing | AuthErrorKind::Invalid => 4001,
            AuthErrorKind::Expired => 4002,
            AuthErrorKind::Revoked
            | AuthErrorKind::Forbidden
            | AuthErrorKind::InsufficientScope
            | AuthErrorKind::OriginRejected => 4003,
            AuthErrorKind::Timeout => 4008,
            AuthErrorKind::Malformed | AuthErrorKind::Ambiguous | AuthErrorKind::TooLarge => 4400,
            AuthErrorKind::Unavailable => 1013,
            AuthErrorKind::LimitReached => 4429,
        }
    }

    /// Whether a client may succeed by reconnecting (after refreshing its
    /// credential, or after a delay).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            AuthErrorKind::Expired
                | AuthErrorKind::Unavailable
                | AuthErrorKind::Timeout
                | AuthErrorKind::LimitReached
        )
    }

    /// A short text for a response body or close reason. Never contains the
    /// credential.
    pub fn body_text(&self) -> &'static str {
        if let Some(detail) = self.detail {
            return detail;
        }
        match self.kind {
            AuthErrorKind::Missing => "missing credential",
            AuthErrorKind::Malformed => "malformed credential",
            AuthErrorKind::Ambiguous => "credential presented more than once",
            AuthErrorKind::TooLarge => "credential too large",
            AuthErrorKind::Invalid => "invalid credential",
            AuthErrorKind::Expired => "credential expired",
            AuthErrorKind::Revoked => "credential revoked",
            AuthErrorKind::Forbidden => "forbidden",
            AuthErrorKind::InsufficientScope => "insufficient scope",
            AuthErrorKind::OriginRejected => "origin not allowed",
            AuthErrorKind::Unavailable => "authentication backend unavailable",
            AuthErrorKind::Timeout => "authentication timed out",
            AuthErrorKind::LimitReached => "too many outstanding tickets",
        }
    }
}

impl From<AuthErrorKind> for AuthError {
    fn from(kind: AuthErrorKind) -> Self {
        Self::new(kind)
    }
}

impl fmt::Debug for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("AuthError");
        d.field("kind", &self.kind);
        if let Some(via) = self.via {
            d.field("via", &via);
        }
        if let Some(detail) = self.detail {
            d.field("detail", &detail);
        }
        if let Some(source) = &self.source {
            d.field("source", &format_args!("{source}"));
        }
        d.finish()
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.body_text())?;
        if let Some(via) = self.via {
            write!(f, " (via {via})")?;
        }
        Ok(())
    }
}

impl StdError for AuthError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// A configuration that cannot work, reported when it is built rather than on
/// the first request.
#[derive(Clone, Debug)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_challenges() {
        let missing = AuthError::new(AuthErrorKind::Missing);
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(missing.www_authenticate(), Some("Bearer"));
        let invalid = AuthError::new(AuthErrorKind::Invalid);
        assert_eq!(
            invalid.www_authenticate(),
            Some("Bearer error=\"invalid_token\"")
        );
        assert_eq!(
            AuthError::new(AuthErrorKind::Ambiguous).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            AuthError::new(AuthErrorKind::Unavailable).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            AuthError::new(AuthErrorKind::OriginRejected).www_authenticate(),
            None
        );
    }

    #[test]
    fn display_names_the_source_not_the_secret() {
        let err = AuthError::new(AuthErrorKind::Invalid).with_via(SourceKind::Query);
        assert_eq!(err.to_string(), "invalid credential (via query)");
    }
}
