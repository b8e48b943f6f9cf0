//! The upgrade-request layer: [`WsAuthLayer`] → [`WsAuth`] → [`ResponseFuture`].
//!
//! The layer acts on WebSocket upgrade requests — HTTP/1.1 `Upgrade: websocket`
//! and HTTP/2 extended `CONNECT` ([RFC 8441]) — and passes every other request
//! through untouched, unless [`all_requests`](WsAuthLayer::all_requests) is set.
//! For an upgrade it checks the `Origin`, finds the credential, removes it from
//! the request, verifies it and inserts an [`Authenticated`] into the request
//! extensions. The request itself is passed on, not rebuilt, so hyper's upgrade
//! handle in its extensions survives.
//!
//! | outcome | response |
//! |---|---|
//! | no credential | 401, `WWW-Authenticate: Bearer` |
//! | invalid or expired credential | 401, `WWW-Authenticate: Bearer error="invalid_token"` |
//! | ambiguous, oversize or malformed credential | 400, `Bearer error="invalid_request"` |
//! | `Origin` not allowed | 403 |
//! | verification backend down | 503 (fails closed) |
//!
//! ```
//! use std::future::{ready, Ready};
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_ws_auth::source::Bearer;
//! use tower_ws_auth::{AuthError, AuthErrorKind, Authenticated, Credential, Verified, WsAuthLayer};
//!
//! fn verify(c: Credential) -> Ready<Result<Verified<String>, AuthError>> {
//!     ready(if c.ct_eq("let-me-in") { Ok(Verified::new("alice".to_owned())) } else { Err(AuthErrorKind::Invalid.into()) })
//! }
//! let handler = service_fn(|req: Request<()>| async move {
//!     let user = &req.extensions().get::<Authenticated<String>>().unwrap().identity;
//!     assert!(req.headers().get("authorization").is_none());
//!     Ok::<_, std::convert::Infallible>(Response::new(format!("hello {user}")))
//! });
//! let service = WsAuthLayer::new(Bearer, verify).layer(handler);
//!
//! let upgrade = |token: &str| {
//!     Request::get("/ws")
//!         .header("connection", "upgrade")
//!         .header("upgrade", "websocket")
//!         .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
//!         .header("authorization", format!("Bearer {token}"))
//!         .body(())
//!         .unwrap()
//! };
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let ok = service.clone().oneshot(upgrade("let-me-in")).await.unwrap();
//! assert_eq!(ok.into_body(), "hello alice");
//!
//! let refused = service.oneshot(upgrade("guess")).await.unwrap();
//! assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(refused.headers()["www-authenticate"], r#"Bearer error="invalid_token""#);
//! # });
//! ```
//!
//! [RFC 8441]: https://www.rfc-editor.org/rfc/rfc8441

mod future;
#[allow(clippy::module_inception)]
mod layer;
mod service;

use std::fmt;
use std::sync::Arc;

use http::header::UPGRADE;
use http::{Method, Request, Uri, Version};

pub use self::future::ResponseFuture;
pub use self::layer::WsAuthLayer;
pub use self::service::WsAuth;
use crate::authenticate::Authenticate;
pub use crate::verify::Authenticated;

/// Whether `req` asks for a WebSocket: an HTTP/1.1 `Upgrade: websocket`, or an
/// HTTP/2 (or later) `CONNECT` ([RFC 8441], [RFC 9220]).
///
/// Any `Upgrade` header naming `websocket` counts, even without
/// `Sec-WebSocket-Key`: a half-formed upgrade is authenticated rather than
/// waved through. Every HTTP/2 `CONNECT` counts too, since the `:protocol`
/// pseudo-header is not part of `http`'s types.
///
/// [RFC 8441]: https://www.rfc-editor.org/rfc/rfc8441
/// [RFC 9220]: https://www.rfc-editor.org/rfc/rfc9220
pub fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    if req.method() == Method::CONNECT {
        return req.version() >= Version::HTTP_2;
    }
    req.headers().get_all(UPGRADE).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    })
}

/// Redacts the query parameters that carry credentials, for logging layers
/// that sit outside [`WsAuthLayer`] and so see the URI before it is stripped.
/// Get one from [`WsAuthLayer::redactor`]; it is cheap to clone into a
/// `TraceLayer`'s `make_span_with` closure.
///
/// ```
/// use tower_ws_auth::source::Query;
/// use tower_ws_auth::{Redactor, WsAuthLayer};
/// # use std::future::{ready, Ready};
/// # use tower_ws_auth::{AuthError, Credential, Verified};
/// # fn verify(_: Credential) -> Ready<Result<Verified<()>, AuthError>> { ready(Ok(Verified::new(()))) }
///
/// let layer = WsAuthLayer::new(Query::param("ticket"), verify);
/// let redactor: Redactor = layer.redactor();
/// let uri = "/ws?room=1&ticket=s3cr3t".parse().unwrap();
/// assert_eq!(redactor.uri(&uri).to_string(), "/ws?room=1&ticket=[redacted]");
/// ```
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    params: Arc<[String]>,
}

impl Redactor {
    /// A redactor for these query parameter names, and the names clients
    /// commonly put credentials in ([`WELL_KNOWN_CREDENTIAL_PARAMS`]).
    pub fn for_params<I, T>(names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let mut params: Vec<String> = names.into_iter().map(Into::into).collect();
        params.extend(
            WELL_KNOWN_CREDENTIAL_PARAMS
                .iter()
                .map(|&name| name.to_owned()),
        );
        Self {
            params: params.into(),
        }
    }

    pub(crate) fn for_auth<A: Authenticate>(auth: &A) -> Self {
        let mut names = Vec::new();
        auth.visit_query_params(&mut |name| names.push(name.to_owned()));
        Self::for_params(names)
    }

    /// `uri`, displaying path and query with credential values replaced by
    /// `[redacted]`.
    pub fn uri<'a>(&'a self, uri: &'a Uri) -> RedactedUri<'a> {
        RedactedUri {
            uri,
            params: &self.params,
        }
    }
}

/// Query parameter names that clients commonly carry credentials in, hidden
/// by every [`Redactor`] whatever the layer reads: a client that sends its
/// token under another name than the one configured still must not have it
/// logged (RFC 6750 §2.3 names `access_token`).
pub const WELL_KNOWN_CREDENTIAL_PARAMS: &[&str] = &[
    "access_token",
    "id_token",
    "refresh_token",
    "token",
    "jwt",
    "auth",
    "authorization",
    "bearer",
    "api_key",
    "apikey",
    "key",
    "session",
    "sid",
    "password",
    "ticket",
];

/// Whether `text` looks like a JWT (a JWS in compact form: a base64url JSON
/// header, `eyJ…`, and two dots): hidden wherever it appears in a URI.
fn looks_like_jwt(text: &str) -> bool {
    text.len() > 20 && text.starts_with("eyJ") && text.bytes().filter(|&b| b == b'.').count() >= 2
}

/// Displays a URI's path and query with credential parameters redacted.
pub struct RedactedUri<'a> {
    uri: &'a Uri,
    params: &'a [String],
}

impl fmt::Display for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A token in the path (`/ws/eyJ…`) is hidden too.
        for (i, segment) in self.uri.path().split('/').enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            if looks_like_jwt(segment) {
                f.write_str("[redacted]")?;
            } else {
                f.write_str(segment)?;
            }
        }
        let Some(query) = self.uri.query() else {
            return Ok(());
        };
        f.write_str("?")?;
        // Pairs split at `&` and at `;` (some parsers accept either), so a
        // value hidden behind the other separator is still one pair.
        let mut rest = query;
        loop {
            let end = rest.find(['&', ';']).unwrap_or(rest.len());
            let pair = &rest[..end];
            match redaction(pair, self.params) {
                Redaction::Keep => f.write_str(pair)?,
                Redaction::Value(key) => write!(f, "{key}=[redacted]")?,
                Redaction::Whole => f.write_str("[redacted]")?,
            }
            let Some(separator) = rest[end..].chars().next() else {
                return Ok(());
            };
            write!(f, "{separator}")?;
            rest = &rest[end + 1..];
        }
    }
}

enum Redaction<'a> {
    Keep,
    /// The key is exactly a credential's name: show it, hide the value.
    Value(&'a str),
    /// The key only decodes to a credential's name: hide the whole pair.
    Whole,
}

/// Whether a query pair carries a credential, read as leniently as any
/// parser a log reader might use: names compared case-insensitively, after
/// percent-decoding (so an encoded `=` splits the pair too) and after an
/// HTML-escaped `&amp;` prefix.
fn redaction<'a>(pair: &'a str, params: &[String]) -> Redaction<'a> {
    let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
    if params.iter().any(|p| raw_key == p) || looks_like_jwt(raw_value) {
        return Redaction::Value(raw_key);
    }
    if looks_like_jwt(raw_key) {
        return Redaction::Whole;
    }
    let decoded = percent_encoding::percent_decode_str(pair).decode_utf8_lossy();
    let key = decoded.split_once('=').map_or(&*decoded, |(k, _)| k);
    let key = key.replace('+', " ");
    let key = key.trim();
    let key = strip_prefix_ignore_case(key, "amp;").unwrap_or(key).trim();
    if params.iter().any(|p| key.eq_ignore_ascii_case(p)) {
        Redaction::Whole
    } else {
        Redaction::Keep
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

impl fmt::Debug for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::{ready, Ready};

    use http::{Request, Response, StatusCode, Version};
    use tower::{service_fn, Layer, Service, ServiceExt};

    use super::*;
    use crate::credential::SourceKind;
    use crate::source::Bearer;
    use crate::{AuthError, AuthErrorKind, Credential, Verified};

    fn verify(c: Credential) -> Ready<Result<Verified<String>, AuthError>> {
        ready(if c.ct_eq("good") {
            Ok(Verified::new("alice".to_owned()))
        } else {
            Err(AuthErrorKind::Invalid.into())
        })
    }

    async fn call(
        layer: &WsAuthLayer<impl Authenticate + Clone>,
        req: Request<()>,
    ) -> Response<String> {
        let inner = service_fn(|req: Request<()>| async move {
            let who = req
                .extensions()
                .get::<Authenticated<String>>()
                .map_or("anonymous".to_owned(), |a| a.identity.clone());
            Ok::<_, Infallible>(Response::new(who))
        });
        layer.layer(inner).oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn http2_extended_connect_is_authenticated() {
        let layer = WsAuthLayer::new(Bearer, verify);
        let connect = || Request::connect("https://chat.example/ws").version(Version::HTTP_2);
        let refused = call(&layer, connect().body(()).unwrap()).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let ok = call(
            &layer,
            connect()
                .header("authorization", "Bearer good")
                .body(())
                .unwrap(),
        )
        .await;
        assert_eq!(ok.into_body(), "alice");
    }

    #[tokio::test]
    async fn plain_requests_pass_unless_all_requests_are_guarded() {
        let plain = || Request::get("/api").body(()).unwrap();
        let layer = WsAuthLayer::new(Bearer, verify);
        assert_eq!(call(&layer, plain()).await.into_body(), "anonymous");
        let guarded = WsAuthLayer::new(Bearer, verify).all_requests();
        assert_eq!(
            call(&guarded, plain()).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn the_rejection_carries_the_error_and_can_be_replaced() {
        let upgrade = || {
            Request::get("/ws")
                .header("upgrade", "websocket")
                .header("authorization", "Bearer bad")
                .body(())
                .unwrap()
        };
        let refused = call(&WsAuthLayer::new(Bearer, verify), upgrade()).await;
        let error = refused.extensions().get::<AuthError>().unwrap();
        assert_eq!(error.kind(), AuthErrorKind::Invalid);
        assert_eq!(error.via(), Some(SourceKind::Header));

        let hidden = WsAuthLayer::new(Bearer, verify).on_rejection(|_e: AuthError| {
            let mut r = Response::new(String::new());
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        });
        let inner = service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        });
        let response = hidden.layer(inner).oneshot(upgrade()).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    /// Counts its clones; answers with the identity it was handed.
    struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Clone for Counting {
        fn clone(&self) -> Self {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Self(self.0.clone())
        }
    }

    impl tower::Service<Request<()>> for Counting {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = Ready<Result<Response<String>, Infallible>>;
        fn poll_ready(
            &mut self,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: Request<()>) -> Self::Future {
            let who = req
                .extensions()
                .get::<Authenticated<String>>()
                .map(|a| a.identity.clone());
            ready(Ok(Response::new(who.unwrap_or_default())))
        }
    }

    /// Verifies at once, like the JWT verifier.
    #[derive(Clone)]
    struct AtOnce;

    impl crate::Verifier for AtOnce {
        type Identity = String;
        type Future = Ready<Result<Verified<String>, AuthError>>;
        fn verify(&self, c: Credential) -> Self::Future {
            verify(c)
        }
        fn verify_now(&self, c: Credential) -> crate::Verification<Self::Future, String> {
            crate::Verification::Ready(verify(c).into_inner())
        }
    }

    #[tokio::test]
    async fn immediate_verifiers_skip_the_inner_clone_and_others_take_it() {
        let upgrade = || {
            Request::get("/ws")
                .header("upgrade", "websocket")
                .header("authorization", "Bearer good")
                .body(())
                .unwrap()
        };
        let clones = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = || clones.load(std::sync::atomic::Ordering::Relaxed);

        let mut at_once = WsAuthLayer::new(Bearer, AtOnce).layer(Counting(clones.clone()));
        let response = at_once
            .ready()
            .await
            .unwrap()
            .call(upgrade())
            .await
            .unwrap();
        assert_eq!(response.into_body(), "alice");
        assert_eq!(count(), 0);

        let mut later = WsAuthLayer::new(Bearer, verify).layer(Counting(clones.clone()));
        let response = later.ready().await.unwrap().call(upgrade()).await.unwrap();
        assert_eq!(response.into_body(), "alice");
        assert_eq!(count(), 1);
    }

    #[test]
    fn the_redactor_hides_near_miss_spellings() {
        let redactor = Redactor::for_params(["ticket"]);
        let show = |uri: &str| redactor.uri(&uri.parse().unwrap()).to_string();
        assert_eq!(show("/ws?room=1&ticket=s1"), "/ws?room=1&ticket=[redacted]");
        for (uri, secret) in [
            ("/ws?Ticket=s2", "s2"),
            ("/ws?TICKET=s3&x=1", "s3"),
            ("/ws?ticket%3Ds4", "s4"),
            ("/ws?tick%65t=s5", "s5"),
            ("/ws?x=1;ticket=s6", "s6"),
            ("/ws?x=1&amp;ticket=s7", "s7"),
            ("/ws?x=1&amp%3Bticket=s8", "s8"),
            ("/ws?+ticket=s9", "s9"),
            ("/ws?%54icket%3ds10", "s10"),
        ] {
            let shown = show(uri);
            assert!(!shown.contains(secret), "{uri} shown as {shown}");
            assert!(shown.contains("[redacted]"), "{uri} shown as {shown}");
        }
        assert_eq!(show("/ws?room=1;x=2&tickets=3"), "/ws?room=1;x=2&tickets=3");
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
        for uri in [
            format!("/ws?access_token={jwt}"),
            format!("/ws?Access_Token={jwt}"),
            format!("/ws?whatever={jwt}"),
            format!("/ws/{jwt}"),
            format!("/ws?{jwt}"),
        ] {
            let shown = show(&uri);
            assert!(!shown.contains(jwt), "{uri} shown as {shown}");
        }
    }

    #[test]
    fn upgrade_detection() {
        let req = |b: http::request::Builder| b.body(()).unwrap();
        assert!(is_websocket_upgrade(&req(
            Request::get("/").header("upgrade", "WebSocket")
        )));
        assert!(is_websocket_upgrade(&req(
            Request::get("/").header("upgrade", "h2c, websocket")
        )));
        assert!(!is_websocket_upgrade(&req(
            Request::get("/").header("upgrade", "h2c")
        )));
        assert!(!is_websocket_upgrade(&req(Request::get("/"))));
        assert!(!is_websocket_upgrade(&req(Request::connect(
            "example.com:443"
        ))));
    }
}
