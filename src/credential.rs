//! The secret a client presented, and where it came from.
//!
//! A [`Credential`] never prints its secret: `Debug` shows `[redacted]` and it
//! has no `Display`. Comparison with another secret should go through
//! [`Credential::ct_eq`], which takes the same time wherever the first
//! difference is.
//!
//! ```
//! use tower_ws_auth::{Credential, SourceKind};
//!
//! let credential = Credential::new(SourceKind::Header, "s3cr3t");
//! assert_eq!(format!("{credential:?}"), r#"Credential { via: Header, secret: "[redacted]" }"#);
//! assert!(credential.ct_eq("s3cr3t"));
//! assert!(!credential.ct_eq("guess"));
//! ```

use std::fmt;

use subtle::ConstantTimeEq;

/// Where a credential was found.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A query parameter of the upgrade URL (typically a one-time ticket).
    Query,
    /// A cookie.
    Cookie,
    /// A request header (`Authorization: Bearer` or a named header).
    Header,
    /// An entry of `Sec-WebSocket-Protocol`.
    Subprotocol,
    /// The first message after the upgrade.
    FirstMessage,
}

impl SourceKind {
    /// A short lowercase name: `query`, `cookie`, `header`, `subprotocol`,
    /// `first_message`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Cookie => "cookie",
            Self::Header => "header",
            Self::Subprotocol => "subprotocol",
            Self::FirstMessage => "first_message",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret presented by a client, not yet verified.
#[derive(Clone)]
pub struct Credential {
    via: SourceKind,
    secret: String,
}

impl Credential {
    /// A credential found in `via`.
    pub fn new(via: SourceKind, secret: impl Into<String>) -> Self {
        Self {
            via,
            secret: secret.into(),
        }
    }

    /// Where it was found.
    pub fn via(&self) -> SourceKind {
        self.via
    }

    /// The secret itself. Named so that every place that reads it is easy to
    /// find; never log what it returns.
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    /// Length of the secret in bytes.
    pub fn len(&self) -> usize {
        self.secret.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.secret.is_empty()
    }

    /// Compare the secret with `other` in constant time.
    pub fn ct_eq(&self, other: &str) -> bool {
        self.secret.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("via", &self.via)
            .field("secret", &"[redacted]")
            .finish()
    }
}
