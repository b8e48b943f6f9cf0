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

use http::HeaderValue;
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
///
/// A credential read from a header keeps that header's bytes (a reference
/// count, no copy) and the range of the secret in them, so that extracting
/// it allocates nothing.
#[derive(Clone)]
pub struct Credential {
    via: SourceKind,
    secret: Secret,
}

#[derive(Clone)]
enum Secret {
    Owned(String),
    /// `value[start..end]`, checked to be ASCII when it was found.
    InHeader {
        value: HeaderValue,
        start: usize,
        end: usize,
    },
}

impl Credential {
    /// A credential found in `via`.
    pub fn new(via: SourceKind, secret: impl Into<String>) -> Self {
        Self {
            via,
            secret: Secret::Owned(secret.into()),
        }
    }

    /// The part `text` of `value`'s bytes, without copying it; a copy when
    /// `text` does not lie within `value`. Being a `str`, those bytes are
    /// UTF-8, so exposing them again yields `text`.
    pub(crate) fn in_header(via: SourceKind, value: &HeaderValue, text: &str) -> Self {
        let bytes = value.as_bytes();
        let start = (text.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize);
        let end = start.wrapping_add(text.len());
        if start <= end && end <= bytes.len() {
            Self {
                via,
                secret: Secret::InHeader {
                    value: value.clone(),
                    start,
                    end,
                },
            }
        } else {
            Self::new(via, text)
        }
    }

    /// Where it was found.
    pub fn via(&self) -> SourceKind {
        self.via
    }

    /// The secret itself. Named so that every place that reads it is easy to
    /// find; never log what it returns.
    pub fn expose_secret(&self) -> &str {
        match &self.secret {
            Secret::Owned(secret) => secret,
            Secret::InHeader { value, start, end } => value
                .as_bytes()
                .get(*start..*end)
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .unwrap_or(""),
        }
    }

    /// Length of the secret in bytes.
    pub fn len(&self) -> usize {
        match &self.secret {
            Secret::Owned(secret) => secret.len(),
            Secret::InHeader { start, end, .. } => end - start,
        }
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Compare the secret with `other` in constant time.
    pub fn ct_eq(&self, other: &str) -> bool {
        self.expose_secret()
            .as_bytes()
            .ct_eq(other.as_bytes())
            .into()
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
