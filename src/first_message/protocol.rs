//! The shapes of the auth messages: [`JsonAuth`] and [`GraphqlTransportWs`], or
//! your own [`AuthProtocol`].

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{AuthError, AuthErrorKind};

/// What an incoming text message means to the authenticator.
#[derive(Debug)]
pub enum Incoming {
    /// An auth message carrying this token.
    Auth(String),
    /// A protocol-level ping; send this reply and keep waiting.
    Ping(String),
    /// A well-formed application message (data before auth, or after it).
    Other,
    /// Not a message of this protocol.
    Malformed,
}

/// How to refuse: an optional reply, then the close code and reason.
#[derive(Debug)]
pub struct Refusal {
    /// Sent before the close frame.
    pub reply: Option<String>,
    /// The close code.
    pub code: u16,
    /// The close reason (never contains the credential).
    pub reason: &'static str,
}

/// The message shapes of an in-band authentication protocol.
pub trait AuthProtocol {
    /// Classify a text message.
    fn read(&self, text: &str) -> Incoming;
    /// A cheap pre-check run on every message after authentication: `false`
    /// means `text` is certainly not an auth message and is passed to the
    /// application without being parsed.
    fn may_be_auth(&self, text: &str) -> bool {
        let _ = text;
        true
    }
    /// The reply to a successful authentication of `subject`.
    fn accepted(&self, subject: &str) -> Option<String>;
    /// How to refuse for `error`. Before authentication the socket is then
    /// closed; a refused re-authentication only sends the reply.
    fn refused(&self, error: &AuthError) -> Refusal;
    /// Whether an auth message after authentication is a re-authentication
    /// (true) or a protocol violation closed with [`refused`](Self::refused)
    /// for [`AuthErrorKind::Ambiguous`] (false).
    fn allows_reauth(&self) -> bool;
}

/// The JSON preset: `{"type":"auth","token":"…"}` →
/// `{"type":"auth_ok","userId":"…"}`, or `{"type":"auth_fail"}` and a close.
///
/// | situation | reply | close |
/// |---|---|---|
/// | invalid token, no auth message, data before auth | `auth_fail` | 4001 |
/// | deadline passed | — | 4001 |
/// | expired token | `auth_fail` | 4002 (refresh, then reconnect) |
/// | binary, not JSON, wrong shape, oversize | `auth_fail` | 4400 |
/// | verifier backend down | `auth_fail` | 1013 (retry later) |
///
/// After authentication the same `auth` message re-authenticates: the
/// [`LifetimeGuard`](super::LifetimeGuard) answers `auth_ok` and extends the
/// socket's life, or `auth_fail` and leaves it as it was.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonAuth;

#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    token: Option<String>,
}

impl AuthProtocol for JsonAuth {
    fn read(&self, text: &str) -> Incoming {
        let Ok(message) = serde_json::from_str::<TypeOnly<'_>>(text) else {
            return Incoming::Malformed;
        };
        match (message.kind.as_deref(), message.token) {
            (Some("auth"), Some(token)) => Incoming::Auth(token),
            (Some("auth"), None) | (None, _) => Incoming::Malformed,
            (Some(_), _) => Incoming::Other,
        }
    }

    fn may_be_auth(&self, text: &str) -> bool {
        // Runs on every application message: a prebuilt SIMD searcher.
        static AUTH: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""auth""#));
        AUTH.find(text.as_bytes()).is_some()
    }

    fn accepted(&self, subject: &str) -> Option<String> {
        Some(serde_json::json!({ "type": "auth_ok", "userId": subject }).to_string())
    }

    fn refused(&self, error: &AuthError) -> Refusal {
        let code = match error.kind() {
            AuthErrorKind::Timeout => 4001,
            _ => error.close_code(),
        };
        Refusal {
            reply: (error.kind() != AuthErrorKind::Timeout)
                .then(|| r#"{"type":"auth_fail"}"#.to_owned()),
            code,
            reason: error.body_text(),
        }
    }

    fn allows_reauth(&self) -> bool {
        true
    }
}

/// The [graphql-transport-ws] preset: the token travels in the
/// `connection_init` payload (`payload.token`, or `payload.authorization` /
/// `payload.Authorization` with or without `Bearer `), success is answered with
/// `connection_ack`, and `{"type":"ping"}` with `{"type":"pong"}` while
/// waiting.
///
/// | situation | close |
/// |---|---|
/// | not JSON, wrong shape, binary, oversize | 4400 Bad request |
/// | invalid, expired or missing token; subscribe before ack | 4401 Unauthorized |
/// | identity refused by the verifier | 4403 Forbidden |
/// | no `connection_init` within the deadline | 4408 Connection initialisation timeout |
/// | a second `connection_init` | 4429 Too many initialisation requests |
/// | verifier backend down | 1013 |
///
/// [graphql-transport-ws]: https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md
#[derive(Clone, Copy, Debug, Default)]
pub struct GraphqlTransportWs;

fn bearer_value(value: &Value) -> Option<String> {
    let text = value.as_str()?;
    let token = match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => text.trim(),
    };
    Some(token.to_owned())
}

impl AuthProtocol for GraphqlTransportWs {
    fn read(&self, text: &str) -> Incoming {
        let Ok(Value::Object(message)) = serde_json::from_str::<Value>(text) else {
            return Incoming::Malformed;
        };
        match message.get("type").and_then(Value::as_str) {
            Some("connection_init") => {
                let payload = message.get("payload");
                let token = payload.and_then(|p| {
                    p.get("token")
                        .and_then(|t| t.as_str().map(str::to_owned))
                        .or_else(|| p.get("authorization").and_then(bearer_value))
                        .or_else(|| p.get("Authorization").and_then(bearer_value))
                });
                // An init without a token is an attempt to connect anonymously.
                Incoming::Auth(token.unwrap_or_default())
            }
            Some("ping") => Incoming::Ping(r#"{"type":"pong"}"#.to_owned()),
            Some(_) => Incoming::Other,
            None => Incoming::Malformed,
        }
    }

    fn may_be_auth(&self, text: &str) -> bool {
        static INIT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"connection_init"));
        INIT.find(text.as_bytes()).is_some()
    }

    fn accepted(&self, _subject: &str) -> Option<String> {
        Some(r#"{"type":"connection_ack"}"#.to_owned())
    }

    fn refused(&self, error: &AuthError) -> Refusal {
        let (code, reason) = match error.kind() {
            AuthErrorKind::Malformed | AuthErrorKind::TooLarge => (4400, "Bad request"),
            AuthErrorKind::Forbidden | AuthErrorKind::OriginRejected => (4403, "Forbidden"),
            AuthErrorKind::Timeout => (4408, "Connection initialisation timeout"),
            AuthErrorKind::Ambiguous => (4429, "Too many initialisation requests"),
            AuthErrorKind::Unavailable => (1013, "Try again later"),
            _ => (4401, "Unauthorized"),
        };
        Refusal {
            reply: None,
            code,
            reason,
        }
    }

    fn allows_reauth(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_preset_reads_messages() {
        assert!(
            matches!(JsonAuth.read(r#"{"type":"auth","token":"t"}"#), Incoming::Auth(t) if t == "t")
        );
        assert!(matches!(
            JsonAuth.read(r#"{"type":"chat"}"#),
            Incoming::Other
        ));
        assert!(matches!(
            JsonAuth.read(r#"{"type":"auth"}"#),
            Incoming::Malformed
        ));
        assert!(matches!(JsonAuth.read("nope"), Incoming::Malformed));
        assert!(matches!(JsonAuth.read("[1]"), Incoming::Malformed));
    }

    #[test]
    fn graphql_preset_reads_messages() {
        let p = GraphqlTransportWs;
        assert!(
            matches!(p.read(r#"{"type":"connection_init","payload":{"token":"t"}}"#), Incoming::Auth(t) if t == "t")
        );
        assert!(
            matches!(p.read(r#"{"type":"connection_init","payload":{"Authorization":"Bearer t"}}"#), Incoming::Auth(t) if t == "t")
        );
        assert!(
            matches!(p.read(r#"{"type":"connection_init"}"#), Incoming::Auth(t) if t.is_empty())
        );
        assert!(matches!(p.read(r#"{"type":"ping"}"#), Incoming::Ping(_)));
        assert!(matches!(
            p.read(r#"{"type":"subscribe","id":"1"}"#),
            Incoming::Other
        ));
    }
}
