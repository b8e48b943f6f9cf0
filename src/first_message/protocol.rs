//! The shapes of the auth messages: [`JsonAuth`] and [`GraphqlTransportWs`], or
//! your own [`AuthProtocol`].
//!
//! One decision says whether a text message is an auth message: the preset's
//! [`read`](AuthProtocol::read). It parses JSON objects only (an array that
//! happens to start with `"auth"` is application data) and understands
//! escapes (`"\u0061uth"` is `"auth"`). The quick check that runs on every
//! message after authentication, [`may_be_auth`](AuthProtocol::may_be_auth),
//! only skips messages that `read` would certainly not call auth messages.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, LazyLock};

use memchr::memmem::Finder;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{AuthError, AuthErrorKind};

/// What an incoming text message means to the authenticator.
#[non_exhaustive]
#[derive(Debug)]
pub enum Incoming {
    /// An auth message carrying this token.
    Auth(String),
    /// An auth message without a usable token (missing, or not a string):
    /// refused, never handed to the application.
    BadAuth,
    /// A protocol-level ping; send this reply and keep waiting.
    Ping(String),
    /// A protocol message that needs no answer (a `pong`); keep waiting.
    Ignore,
    /// A well-formed application message (data before auth, or after it).
    Other,
    /// Not a message of this protocol.
    Malformed,
}

impl Incoming {
    /// Whether this is an auth message, well-formed or not: the messages a
    /// [`LifetimeGuard`](super::LifetimeGuard) intercepts.
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Auth(_) | Self::BadAuth)
    }
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
    /// Classify a text message. The single definition of "auth message".
    fn read(&self, text: &str) -> Incoming;
    /// A cheap pre-check run on every message after authentication: `false`
    /// means [`read`](Self::read) would certainly not call `text` an auth
    /// message, so it is passed to the application without being parsed.
    /// Must never be `false` for a message `read` calls an auth message.
    fn may_be_auth(&self, text: &str) -> bool {
        let _ = text;
        true
    }
    /// The reply to a successful authentication of `subject`.
    fn accepted(&self, subject: &str) -> Option<String>;
    /// How to refuse for `error`. Before authentication the socket is then
    /// closed; a refused re-authentication only sends the reply. The
    /// [`LifetimeGuard`](super::LifetimeGuard) also closes a live socket with
    /// the refusal for [`Expired`](AuthErrorKind::Expired) when the credential
    /// expires.
    fn refused(&self, error: &AuthError) -> Refusal;
    /// Whether an auth message after authentication is a re-authentication
    /// (true) or a protocol violation closed with [`refused`](Self::refused)
    /// for [`AuthErrorKind::Ambiguous`] (false).
    fn allows_reauth(&self) -> bool;
}

/// The detail of the error for a data message sent before authenticating.
pub(crate) const DATA_BEFORE_AUTH: &str = "data before authentication";

/// Whether `text` may be a JSON object containing the string `needle`
/// (quoted): true for every object whose member is `needle` once unescaped,
/// since without a backslash the text holds the string literally.
fn may_be_object_with(text: &str, needle: &Finder<'_>) -> bool {
    let bytes = text.as_bytes();
    let Some(first) = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    else {
        return false;
    };
    if bytes[first] != b'{' {
        return false;
    }
    needle.find(bytes).is_some() || memchr::memchr(b'\\', bytes).is_some()
}

/// The members of a JSON object this crate looks at: `type`, and one more
/// field (kept as raw JSON). Anything that is not an object does not read as
/// an envelope.
struct Envelope<'a> {
    kind: Option<Cow<'a, str>>,
    field: Option<Value>,
}

struct EnvelopeSeed<'f> {
    field: &'f str,
}

impl<'de> de::DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = Envelope<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut envelope = Envelope {
            kind: None,
            field: None,
        };
        // A repeated member: the last one counts, as in `JSON.parse`, most
        // JSON parsers and `serde_json::Value`, so that this reading and the
        // application's never disagree on whether a message is an auth
        // message.
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "type" {
                envelope.kind = map
                    .next_value::<Option<BorrowedOrOwned<'de>>>()?
                    .map(|s| s.0);
            } else if key == self.field {
                envelope.field = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(envelope)
    }
}

/// A string, borrowed from the message when it has no escapes.
struct BorrowedOrOwned<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for BorrowedOrOwned<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BorrowedOrOwned<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedOrOwned(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BorrowedOrOwned(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Read `text` as a JSON object: its `type` and its `field` member.
/// `None`: not a JSON object of that shape.
fn envelope<'a>(text: &'a str, field: &str) -> Option<Envelope<'a>> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let envelope =
        de::DeserializeSeed::deserialize(EnvelopeSeed { field }, &mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(envelope)
}

/// The JSON preset: `{"type":"auth","token":"…"}` →
/// `{"type":"auth_ok","userId":"…"}`, or `{"type":"auth_fail"}` and a close.
///
/// An auth message is a JSON object whose `type` is `"auth"` (escapes
/// understood); anything else — an array, a string, an object of another
/// type — is application data.
///
/// | situation | reply | close |
/// |---|---|---|
/// | invalid token, no auth message, data before auth | `auth_fail` | 4001 |
/// | deadline passed | — | 4001 |
/// | expired token | `auth_fail` | 4002 (refresh, then reconnect) |
/// | revoked token (or a live socket's credential revoked) | `auth_fail` (— on a live socket) | 4003 |
/// | binary, not JSON, wrong shape, oversize | `auth_fail` | 4400 |
/// | verifier backend down | `auth_fail` | 1013 (retry later) |
///
/// After authentication the same `auth` message re-authenticates: the
/// [`LifetimeGuard`](super::LifetimeGuard) answers `auth_ok` and extends the
/// socket's life, or `auth_fail` and leaves it as it was. When the
/// credential expires the guard closes with 4002.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonAuth;

impl AuthProtocol for JsonAuth {
    fn read(&self, text: &str) -> Incoming {
        let Some(message) = envelope(text, "token") else {
            return Incoming::Malformed;
        };
        match (message.kind.as_deref(), message.field) {
            (Some("auth"), Some(Value::String(token))) => Incoming::Auth(token),
            (Some("auth"), _) => Incoming::BadAuth,
            (Some(_), _) => Incoming::Other,
            (None, _) => Incoming::Malformed,
        }
    }

    fn may_be_auth(&self, text: &str) -> bool {
        // Runs on every application message: a prebuilt SIMD searcher.
        static AUTH: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""auth""#));
        may_be_object_with(text, &AUTH)
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

/// The [graphql-transport-ws] preset, as the `graphql-ws` client expects it.
///
/// The token travels in the `connection_init` payload, in any of the shapes
/// the ecosystem uses: `payload.token`, `payload.authorization` or
/// `payload.Authorization` (with or without `Bearer `), or
/// `payload.headers.Authorization` / `payload.headers.authorization` (the
/// shape Apollo and Hasura document); others can be added with
/// [`token_at`](Self::token_at). Success is answered with `connection_ack`,
/// `{"type":"ping"}` with `{"type":"pong"}` while waiting, and a `pong` is
/// allowed before `connection_init`.
///
/// | situation | close | does `graphql-ws` retry? |
/// |---|---|---|
/// | invalid, expired or missing token at `connection_init` | 4403 Forbidden | yes, calling `connectionParams` again |
/// | the credential of a live socket expires | 4403 Forbidden (reason `Credential expired`) | yes |
/// | the credential of a live socket is revoked | 4403 Forbidden (reason `Credential revoked`) | yes, and a fresh credential is needed |
/// | `subscribe` before `connection_ack` | 4401 Unauthorized | no |
/// | not JSON, wrong shape, binary, oversize | 4400 Bad request | no |
/// | no `connection_init` within the deadline | 4408 Connection initialisation timeout | yes |
/// | a second `connection_init` | 4429 Too many initialisation requests | no |
/// | verifier backend down | 1013 Try again later | yes |
///
/// The protocol has no re-authentication: a socket whose credential expires
/// is closed, and the client reconnects with a fresh one from its
/// `connectionParams`.
///
/// [graphql-transport-ws]: https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md
#[derive(Clone, Debug, Default)]
pub struct GraphqlTransportWs {
    /// Extra places to look for the token, as JSON pointers into the payload.
    token_pointers: Arc<[Cow<'static, str>]>,
}

fn bearer_value(value: &Value) -> Option<String> {
    let text = value.as_str()?;
    let token = match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => text.trim(),
    };
    Some(token.to_owned())
}

impl GraphqlTransportWs {
    /// The preset with the usual payload shapes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also look for the token at `pointer`, a JSON pointer into the
    /// `connection_init` payload (e.g. `"/auth/accessToken"`); a `Bearer `
    /// prefix is removed. Tried after the usual shapes, in the order added.
    #[must_use]
    pub fn token_at(mut self, pointer: impl Into<Cow<'static, str>>) -> Self {
        let mut pointers = self.token_pointers.to_vec();
        pointers.push(pointer.into());
        self.token_pointers = pointers.into();
        self
    }

    fn token(&self, payload: &Value) -> Option<String> {
        const USUAL: [&str; 5] = [
            "/token",
            "/authorization",
            "/Authorization",
            "/headers/Authorization",
            "/headers/authorization",
        ];
        USUAL
            .iter()
            .copied()
            .chain(self.token_pointers.iter().map(|p| &**p))
            .find_map(|pointer| payload.pointer(pointer).and_then(bearer_value))
    }
}

impl AuthProtocol for GraphqlTransportWs {
    fn read(&self, text: &str) -> Incoming {
        let Some(message) = envelope(text, "payload") else {
            return Incoming::Malformed;
        };
        match message.kind.as_deref() {
            Some("connection_init") => match message.field {
                // An init without a token is an attempt to connect anonymously.
                None | Some(Value::Null) => Incoming::Auth(String::new()),
                Some(payload @ Value::Object(_)) => {
                    Incoming::Auth(self.token(&payload).unwrap_or_default())
                }
                Some(_) => Incoming::BadAuth,
            },
            Some("ping") => Incoming::Ping(r#"{"type":"pong"}"#.to_owned()),
            Some("pong") => Incoming::Ignore,
            Some(_) => Incoming::Other,
            None => Incoming::Malformed,
        }
    }

    fn may_be_auth(&self, text: &str) -> bool {
        static INIT: LazyLock<Finder<'static>> =
            LazyLock::new(|| Finder::new(br#""connection_init""#));
        may_be_object_with(text, &INIT)
    }

    fn accepted(&self, _subject: &str) -> Option<String> {
        Some(r#"{"type":"connection_ack"}"#.to_owned())
    }

    fn refused(&self, error: &AuthError) -> Refusal {
        let (code, reason) = match error.kind() {
            AuthErrorKind::Malformed | AuthErrorKind::TooLarge => (4400, "Bad request"),
            AuthErrorKind::Missing if error.body_text() == DATA_BEFORE_AUTH => {
                (4401, "Unauthorized")
            }
            AuthErrorKind::Expired => (4403, "Credential expired"),
            AuthErrorKind::Revoked => (4403, "Credential revoked"),
            AuthErrorKind::Timeout => (4408, "Connection initialisation timeout"),
            AuthErrorKind::Ambiguous => (4429, "Too many initialisation requests"),
            AuthErrorKind::Unavailable => (1013, "Try again later"),
            // Invalid or missing credentials, a refused identity: 4403, on
            // which the client calls `connectionParams` again and retries
            // (it treats 4401 as final).
            _ => (4403, "Forbidden"),
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
            Incoming::BadAuth
        ));
        assert!(matches!(
            JsonAuth.read(r#"{"type":"auth","token":7}"#),
            Incoming::BadAuth
        ));
        assert!(
            matches!(JsonAuth.read(r#"{"type":"auth","token":"t"}"#), Incoming::Auth(t) if t == "t")
        );
        assert!(matches!(
            JsonAuth.read(r#"["auth","hello"]"#),
            Incoming::Malformed
        ));
        assert!(!JsonAuth.may_be_auth(r#"["auth","hello"]"#));
        assert!(JsonAuth.may_be_auth(r#" {"type":"auth","token":"t"}"#));
        assert!(matches!(JsonAuth.read("nope"), Incoming::Malformed));
        assert!(matches!(JsonAuth.read("[1]"), Incoming::Malformed));
        // Repeated members: the last one counts, as in JSON.parse.
        assert!(
            matches!(JsonAuth.read(r#"{"type":"auth","token":"a","token":"b"}"#), Incoming::Auth(t) if t == "b")
        );
        assert!(JsonAuth
            .read(r#"{"type":"chat","type":"auth","token":"t"}"#)
            .is_auth());
        assert!(!JsonAuth
            .read(r#"{"type":"auth","type":"chat","token":"t"}"#)
            .is_auth());
    }

    #[test]
    fn graphql_preset_reads_messages() {
        let p = GraphqlTransportWs::new().token_at("/auth/accessToken");
        assert!(
            matches!(p.read(r#"{"type":"connection_init","payload":{"token":"t"}}"#), Incoming::Auth(t) if t == "t")
        );
        assert!(
            matches!(p.read(r#"{"type":"connection_init","payload":{"Authorization":"Bearer t"}}"#), Incoming::Auth(t) if t == "t")
        );
        assert!(
            matches!(p.read(r#"{"type":"connection_init"}"#), Incoming::Auth(t) if t.is_empty())
        );
        assert!(
            matches!(p.read(r#"{"type":"connection_init","payload":{"headers":{"Authorization":"Bearer h"}}}"#), Incoming::Auth(t) if t == "h")
        );
        assert!(
            matches!(p.read(r#"{"type":"connection_init","payload":{"auth":{"accessToken":"c"}}}"#), Incoming::Auth(t) if t == "c")
        );
        assert!(matches!(p.read(r#"{"type":"ping"}"#), Incoming::Ping(_)));
        assert!(matches!(p.read(r#"{"type":"pong"}"#), Incoming::Ignore));
        assert!(matches!(
            p.read(r#"{"type":"subscribe","id":"1"}"#),
            Incoming::Other
        ));
    }
}
