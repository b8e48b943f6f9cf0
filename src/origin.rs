//! The `Origin` check that stops Cross-Site WebSocket Hijacking.
//!
//! Browsers do not apply the same-origin policy to WebSockets: a page on
//! `evil.example` can open a socket to your server, and the browser attaches
//! your cookies. The only defence is the server checking the `Origin` header
//! ([RFC 6455 §10.2]). A request without `Origin` comes from a non-browser client
//! (a browser always sends it on a WebSocket handshake), which cannot ride on a
//! victim's cookies, so it is allowed unless [`OriginPolicy::require_origin`]
//! says otherwise.
//!
//! ```
//! use http::Request;
//! use tower_ws_auth::OriginPolicy;
//!
//! let policy = OriginPolicy::allow(["https://app.example.com"]).unwrap();
//!
//! let ok = Request::get("/ws").header("origin", "https://APP.example.com:443").body(()).unwrap();
//! assert!(policy.check(&ok.into_parts().0).is_ok());
//!
//! let evil = Request::get("/ws").header("origin", "https://evil.example").body(()).unwrap();
//! let err = policy.check(&evil.into_parts().0).unwrap_err();
//! assert_eq!(err.status(), http::StatusCode::FORBIDDEN);
//! ```
//!
//! [RFC 6455 §10.2]: https://www.rfc-editor.org/rfc/rfc6455#section-10.2

use std::sync::Arc;

use http::header::{HOST, ORIGIN};
use http::request::Parts;

use crate::error::{AuthError, AuthErrorKind, ConfigError};

/// Which `Origin`s may open a socket.
///
/// The layer's default is [`same_origin`](Self::same_origin) when a cookie source
/// is configured and [`any`](Self::any) otherwise.
#[derive(Clone, Debug)]
pub struct OriginPolicy {
    rule: Rule,
    require_origin: bool,
}

#[derive(Clone, Debug)]
enum Rule {
    Any,
    SameOrigin,
    Allow(Arc<[String]>),
}

impl OriginPolicy {
    /// Every origin is allowed.
    ///
    /// # Security
    ///
    /// With cookie authentication this reopens Cross-Site WebSocket Hijacking:
    /// use it only for sources a browser does not attach on its own (query
    /// tickets, bearer tokens, subprotocol tokens).
    pub fn any() -> Self {
        Self {
            rule: Rule::Any,
            require_origin: false,
        }
    }

    /// Only an `Origin` whose host and port equal the request's `Host` (or, for
    /// HTTP/2, its `:authority`). The scheme is not compared: behind a TLS
    /// terminator the server cannot know it.
    pub fn same_origin() -> Self {
        Self {
            rule: Rule::SameOrigin,
            require_origin: false,
        }
    }

    /// Only these origins, compared exactly after normalising case and default
    /// ports (`https://a.example:443` equals `https://A.example`).
    ///
    /// # Errors
    ///
    /// An entry that is not `scheme://host[:port]` (with nothing after it but an
    /// optional `/`), or an empty list.
    pub fn allow<I, T>(origins: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let mut list = Vec::new();
        for origin in origins {
            let origin = origin.as_ref();
            // Configuration may end in one `/`; a request's Origin may not.
            let trimmed = origin.trim();
            let normalized =
                normalize(trimmed.strip_suffix('/').unwrap_or(trimmed)).ok_or_else(|| {
                    ConfigError::new(format!(
                        "origin {origin:?} is not of the form scheme://host[:port]"
                    ))
                })?;
            list.push(normalized);
        }
        if list.is_empty() {
            return Err(ConfigError::new("the origin allowlist is empty"));
        }
        Ok(Self {
            rule: Rule::Allow(list.into()),
            require_origin: false,
        })
    }

    /// Also refuse requests that carry no `Origin` header (non-browser
    /// clients). Off by default.
    #[must_use]
    pub fn require_origin(mut self, require: bool) -> Self {
        self.require_origin = require;
        self
    }

    /// Whether this policy allows every origin.
    pub fn is_any(&self) -> bool {
        matches!(self.rule, Rule::Any) && !self.require_origin
    }

    /// Check a request head.
    ///
    /// # Errors
    ///
    /// [`OriginRejected`](AuthErrorKind::OriginRejected) when the origin is not
    /// allowed, is `null`, appears twice or is not exactly
    /// `scheme://host[:port]` (a trailing slash, a path, a fragment,
    /// whitespace or a zero-padded port are refused: browsers never send them).
    pub fn check(&self, parts: &Parts) -> Result<(), AuthError> {
        let rejected = || AuthError::new(AuthErrorKind::OriginRejected);
        let mut values = parts.headers.get_all(ORIGIN).iter();
        let Some(origin) = values.next() else {
            return if self.require_origin {
                Err(rejected().with_detail("origin header required"))
            } else {
                Ok(())
            };
        };
        if values.next().is_some() {
            return Err(rejected().with_detail("more than one origin header"));
        }
        if matches!(self.rule, Rule::Any) {
            return Ok(());
        }
        let origin = origin
            .to_str()
            .ok()
            .and_then(normalize)
            .ok_or_else(rejected)?;
        let allowed = match &self.rule {
            Rule::Any => true,
            Rule::Allow(list) => list.contains(&origin),
            Rule::SameOrigin => {
                let host = parts
                    .headers
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .or_else(|| parts.uri.authority().map(|a| a.as_str()));
                match host {
                    Some(host) => same_authority(&origin, host),
                    None => false,
                }
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(rejected())
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// An `Origin` header as browsers send it ([RFC 6454 §7]): exactly
/// `scheme://host[:port]`, normalised to lowercase with the default port
/// dropped. Anything else — a path or trailing slash, a query or fragment,
/// userinfo, whitespace, an empty or zero-padded port — is `None`.
///
/// [RFC 6454 §7]: https://www.rfc-editor.org/rfc/rfc6454#section-7
fn normalize(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme_ok = scheme
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return None;
    }
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']')?;
        let host = &rest[..=end];
        let inner = &host[1..host.len() - 1];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        let port = match &rest[end + 1..] {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        };
        (host, port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !host_ok {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(digits) => {
            let canonical = !digits.is_empty()
                && digits.len() <= 5
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !(digits.len() > 1 && digits.starts_with('0'));
            if !canonical {
                return None;
            }
            Some(digits.parse::<u16>().ok()?)
        }
    };
    let scheme = scheme.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    match port {
        Some(port) if Some(port) != default_port(&scheme) => {
            Some(format!("{scheme}://{host}:{port}"))
        }
        _ => Some(format!("{scheme}://{host}")),
    }
}

/// Whether normalised `origin`'s host and port equal `host_header`'s.
fn same_authority(origin: &str, host_header: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let Ok(host) = host_header.trim().parse::<http::uri::Authority>() else {
        return false;
    };
    let port = host.port_u16().or_else(|| default_port(scheme));
    let (origin_host, origin_port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse::<u16>() {
            Ok(p) => (h, Some(p)),
            Err(_) => (authority, default_port(scheme)),
        },
        _ => (authority, default_port(scheme)),
    };
    origin_host.eq_ignore_ascii_case(host.host()) && origin_port == port
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(origin: Option<&str>, host: &str) -> Parts {
        let mut b = Request::get("/ws").header("host", host);
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn allowlist_normalizes_and_rejects() {
        let p = OriginPolicy::allow(["http://127.0.0.1:3000", "https://app.example"]).unwrap();
        assert!(p.check(&parts(Some("http://127.0.0.1:3000"), "x")).is_ok());
        assert!(p
            .check(&parts(Some("https://APP.example:443"), "x"))
            .is_ok());
        assert!(p.check(&parts(Some("http://127.0.0.1:3001"), "x")).is_err());
        assert!(p.check(&parts(Some("null"), "x")).is_err());
        assert!(p.check(&parts(None, "x")).is_ok());
        assert!(p
            .clone()
            .require_origin(true)
            .check(&parts(None, "x"))
            .is_err());
    }

    #[test]
    fn origins_are_read_exactly_as_browsers_send_them() {
        let p = OriginPolicy::allow(["http://127.0.0.1:3000", "https://app.example/"]).unwrap();
        for ok in [
            "http://127.0.0.1:3000",
            "https://app.example",
            "HTTPS://App.Example:443",
        ] {
            assert!(p.check(&parts(Some(ok), "x")).is_ok(), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:3000/",
            "http://127.0.0.1:3000/ws",
            "http://127.0.0.1:3000#x",
            "http://127.0.0.1:3000?x",
            "http://127.0.0.1:03000",
            "http://127.0.0.1:3000 ",
            "http://127.0.0.1 :3000",
            "http://127.0.0.1:",
            "http://user@127.0.0.1:3000",
            "http:/127.0.0.1:3000",
            "https://app.example.",
            "null",
            "",
        ] {
            assert!(p.check(&parts(Some(bad), "x")).is_err(), "{bad:?}");
        }
        let same = OriginPolicy::same_origin();
        assert!(same
            .check(&parts(Some("http://localhost:3000/"), "localhost:3000"))
            .is_err());
        assert!(same
            .check(&parts(Some("http://localhost:03000"), "localhost:3000"))
            .is_err());
    }

    #[test]
    fn allowlist_rejects_bad_configuration() {
        assert!(OriginPolicy::allow(["not an origin"]).is_err());
        assert!(OriginPolicy::allow(["https://a.example/path"]).is_err());
        assert!(OriginPolicy::allow(Vec::<String>::new()).is_err());
    }

    #[test]
    fn same_origin_compares_host_and_port() {
        let p = OriginPolicy::same_origin();
        assert!(p
            .check(&parts(Some("http://localhost:3000"), "localhost:3000"))
            .is_ok());
        assert!(p
            .check(&parts(Some("https://app.example"), "app.example"))
            .is_ok());
        assert!(p
            .check(&parts(Some("http://localhost:3001"), "localhost:3000"))
            .is_err());
        assert!(p
            .check(&parts(Some("http://evil.example"), "app.example"))
            .is_err());
        assert!(p.check(&parts(Some("http://[::1]:80"), "[::1]")).is_ok());
    }
}
