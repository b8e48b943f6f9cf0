//! Where a credential is read from on the upgrade request.
//!
//! | source | reads | removes from the request passed on |
//! |---|---|---|
//! | [`Query::param("ticket")`](Query::param) | `?ticket=…` (percent-decoded) | that parameter; the rest of the query is kept byte for byte |
//! | [`Cookie::named("session")`](Cookie::named) | the `session` cookie | that cookie; other cookies are kept |
//! | [`Bearer`] | `Authorization: Bearer …` (scheme case-insensitive) | the `Authorization` header |
//! | [`Header::named(name)`](Header::named) | the whole header value | the header |
//! | [`Subprotocol::prefix("bearer.")`](Subprotocol::prefix) | the `bearer.<token>` entry of `Sec-WebSocket-Protocol` | that entry; the real protocols stay, so the handler selects one of them |
//!
//! A source that finds its credential twice rejects the request as
//! [`Ambiguous`](crate::AuthErrorKind::Ambiguous): two readers of the same
//! request could disagree on which copy counts. Every source caps the raw
//! credential at [`DEFAULT_MAX_LEN`] bytes (changeable with `max_len`) before it
//! decodes or verifies anything.
//!
//! Sources compose as tuples, in order: the first one present wins and the
//! others' credentials are still removed from the request.
//!
//! ```
//! use http::Request;
//! use tower_ws_auth::source::{Bearer, CredentialSource, Query};
//!
//! let sources = (Bearer, Query::param("ticket"));
//!
//! // Found: the ticket is read and removed from the URI.
//! let (mut parts, ()) = Request::get("/ws?room=1&ticket=abc").body(()).unwrap().into_parts();
//! let credential = sources.extract(&mut parts).unwrap().unwrap();
//! assert_eq!(credential.expose_secret(), "abc");
//! assert_eq!(parts.uri, "/ws?room=1");
//!
//! // Rejected: the same parameter twice is ambiguous.
//! let (mut parts, ()) = Request::get("/ws?ticket=a&ticket=b").body(()).unwrap().into_parts();
//! let err = sources.extract(&mut parts).unwrap_err();
//! assert_eq!(err.kind(), tower_ws_auth::AuthErrorKind::Ambiguous);
//! ```
//!
//! # Security
//!
//! A query parameter ends up in access logs, proxies and browser history. Put
//! only one-time tickets there, never a long-lived token, and log URIs through
//! [`WsAuthLayer::redactor`](crate::WsAuthLayer::redactor) when the logging
//! layer sits outside this one. Cookies are sent by the browser to every
//! origin's socket: the layer turns the `Origin` check on whenever a cookie
//! source is configured.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use memchr::memmem::Finder;

use http::header::{Entry, HeaderName, HeaderValue, AUTHORIZATION, COOKIE, SEC_WEBSOCKET_PROTOCOL};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};

use crate::credential::{Credential, SourceKind};
use crate::error::{AuthError, AuthErrorKind};

/// The default cap on a credential's raw size: 8 KiB.
pub const DEFAULT_MAX_LEN: usize = 8 * 1024;

/// Reads a credential from the request head and removes it from what the inner
/// service sees.
pub trait CredentialSource {
    /// Read the credential, removing it from `parts`.
    ///
    /// `Ok(None)` means the request does not carry this source's credential at
    /// all. A credential that is present but empty is
    /// [`Invalid`](AuthErrorKind::Invalid), not absent.
    ///
    /// # Errors
    ///
    /// [`Ambiguous`](AuthErrorKind::Ambiguous) when found twice,
    /// [`TooLarge`](AuthErrorKind::TooLarge) over the size cap,
    /// [`Malformed`](AuthErrorKind::Malformed) when it cannot be decoded,
    /// [`Invalid`](AuthErrorKind::Invalid) when present but empty or of the wrong
    /// scheme.
    fn extract(&self, parts: &mut Parts) -> Result<Option<Credential>, AuthError>;

    /// Remove this source's credential from `parts` without reading it; used when
    /// another source won.
    ///
    /// # Errors
    ///
    /// [`Malformed`](AuthErrorKind::Malformed) if the request cannot be rebuilt
    /// without it.
    fn strip(&self, parts: &mut Parts) -> Result<(), AuthError>;

    /// Whether this source reads cookies (the layer then turns the `Origin`
    /// check on by default).
    fn uses_cookies(&self) -> bool {
        false
    }

    /// Call `visit` with each query parameter name this source reads, so that
    /// logs can redact them.
    fn visit_query_params(&self, visit: &mut dyn FnMut(&str)) {
        let _ = visit;
    }

    /// Call `visit` for each source this one is made of, in order, with
    /// whether it reads an ambient credential (a cookie) rather than an
    /// explicit one. The layer warns when an ambient source is tried before an
    /// explicit one: a cookie the client did not choose to send would then
    /// overrule the credential it did choose.
    fn visit_sources(&self, visit: &mut dyn FnMut(bool)) {
        visit(self.uses_cookies());
    }
}

fn check_len(len: usize, max: usize, via: SourceKind) -> Result<(), AuthError> {
    if len > max {
        Err(AuthError::new(AuthErrorKind::TooLarge).with_via(via))
    } else {
        Ok(())
    }
}

fn non_empty(credential: Credential) -> Result<Option<Credential>, AuthError> {
    if credential.is_empty() {
        Err(AuthError::new(AuthErrorKind::Invalid)
            .with_via(credential.via())
            .with_detail("empty credential"))
    } else {
        Ok(Some(credential))
    }
}

/// A query parameter of the upgrade URL, e.g. `?ticket=…`.
///
/// Names and values are decoded as `application/x-www-form-urlencoded` (the way
/// `URLSearchParams` encodes them): `%XX` escapes and `+` for a space.
#[derive(Clone, Debug)]
pub struct Query {
    name: Cow<'static, str>,
    max_len: usize,
}

impl Query {
    /// The parameter called `name`.
    pub fn param(name: impl Into<Cow<'static, str>>) -> Self {
        Self {
            name: name.into(),
            max_len: DEFAULT_MAX_LEN,
        }
    }

    /// Cap on the raw (still encoded) value's length in bytes.
    #[must_use]
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// The parameter's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Decode one `application/x-www-form-urlencoded` component.
fn form_decode(raw: &str) -> Result<Cow<'_, str>, AuthError> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(raw));
    }
    let plus_free = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_free)
        .decode_utf8()
        .map(|s| Cow::Owned(s.into_owned()))
        .map_err(|_| {
            AuthError::new(AuthErrorKind::Malformed)
                .with_via(SourceKind::Query)
                .with_detail("query parameter is not valid UTF-8")
        })
}

/// Whether a raw (encoded) query key names `name`. An encoded key such as
/// `tick%65t` must count: the application's query parser would decode it.
pub(crate) fn key_matches(raw_key: &str, name: &str) -> bool {
    if raw_key == name {
        return true;
    }
    let encoded = raw_key.bytes().any(|b| b == b'%' || b == b'+');
    encoded && matches!(form_decode(raw_key), Ok(key) if key == name)
}

/// The `&`-separated pairs of a query.
fn query_pairs(query: &str) -> impl Iterator<Item = &str> {
    query.split('&')
}

fn split_pair(pair: &str) -> (&str, &str) {
    match pair.bytes().position(|b| b == b'=') {
        Some(at) => (&pair[..at], &pair[at + 1..]),
        None => (pair, ""),
    }
}

fn query_malformed() -> AuthError {
    AuthError::new(AuthErrorKind::Malformed)
        .with_via(SourceKind::Query)
        .with_detail("request URI cannot be rebuilt")
}

/// Replace `parts.uri`'s path and query with `path_and_query`.
fn set_path_and_query(parts: &mut Parts, path_and_query: String) -> Result<(), AuthError> {
    let path_and_query = PathAndQuery::try_from(path_and_query).map_err(|_| query_malformed())?;
    // Taken, not cloned: on failure the request is refused anyway.
    let mut uri_parts = std::mem::take(&mut parts.uri).into_parts();
    uri_parts.path_and_query = Some(path_and_query);
    parts.uri = Uri::from_parts(uri_parts).map_err(|_| query_malformed())?;
    Ok(())
}

impl Query {
    /// The path and query without this parameter, or `None` when the query
    /// does not carry it. `on_value` sees each removed (still encoded) value.
    fn without_param<'a>(
        &self,
        uri: &'a Uri,
        mut on_value: impl FnMut(&'a str) -> Result<(), AuthError>,
    ) -> Result<Option<String>, AuthError> {
        let Some(query) = uri.query() else {
            return Ok(None);
        };
        let path = uri.path();
        let mut rebuilt = String::with_capacity(path.len() + 1 + query.len());
        rebuilt.push_str(path);
        let mut removed = false;
        for pair in query_pairs(query) {
            let (key, value) = split_pair(pair);
            if key_matches(key, &self.name) {
                removed = true;
                on_value(value)?;
                continue;
            }
            rebuilt.push(if rebuilt.len() == path.len() {
                '?'
            } else {
                '&'
            });
            rebuilt.push_str(pair);
        }
        Ok(removed.then_some(rebuilt))
    }
}

impl CredentialSource for Query {
    fn extract(&self, parts: &mut Parts) -> Result<Option<Credential>, AuthError> {
        // One pass: find the parameter and build the URI without it.
        let mut found = None;
        let rebuilt = self.without_param(&parts.uri, |raw| {
            if found.is_some() {
                return Err(AuthError::new(AuthErrorKind::Ambiguous).with_via(SourceKind::Query));
            }
            check_len(raw.len(), self.max_len, SourceKind::Query)?;
            found = Some(form_decode(raw)?.into_owned());
            Ok(())
        })?;
        let (Some(rebuilt), Some(value)) = (rebuilt, found) else {
            return Ok(None);
        };
        set_path_and_query(parts, rebuilt)?;
        non_empty(Credential::new(SourceKind::Query, value))
    }

    fn strip(&self, parts: &mut Parts) -> Result<(), AuthError> {
        match self.without_param(&parts.uri, |_| Ok(()))? {
            Some(rebuilt) => set_path_and_query(parts, rebuilt),
            None => Ok(()),
        }
    }

    fn visit_query_params(&self, visit: &mut dyn FnMut(&str)) {
        visit(&self.name);
    }
}

/// A named cookie, parsed with the `cookie` crate. The value is taken as sent
/// (no percent-decoding): session ids are opaque.
///
/// # Security
///
/// Browsers attach cookies to a WebSocket opened by *any* site. Configuring a
/// cookie source turns the layer's `Origin` check on by default (same origin as
/// `Host`); see [`OriginPolicy`](crate::OriginPolicy).
#[derive(Clone)]
pub struct Cookie {
    name: Cow<'static, str>,
    max_len: usize,
    /// Finds the name in a header: built once, not per request.
    finder: Arc<Finder<'static>>,
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cookie")
            .field("name", &self.name)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl Cookie {
    /// The cookie called `name`.
    pub fn named(name: impl Into<Cow<'static, str>>) -> Self {
        let name = name.into();
        let finder = Arc::new(Finder::new(name.as_bytes()).into_owned());
        Self {
            name,
            max_len: DEFAULT_MAX_LEN,
            finder,
        }
    }

    /// Cap on the cookie value's length in bytes.
    #[must_use]
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a `name=value` pair names this cookie: exactly, or once
    /// percent-decoded (`sess%69on`), as the `cookie` crate's
    /// `split_parse_encoded` and axum-extra's `CookieJar` read it.
    fn is_named_pair(&self, pair: &[u8]) -> bool {
        let name = match pair.iter().position(|&b| b == b'=') {
            Some(at) => &pair[..at],
            None => pair,
        };
        let name = name.trim_ascii();
        if name == self.name.as_bytes() {
            return true;
        }
        name.contains(&b'%') && percent_encoding::percent_decode(name).eq(self.name.bytes())
    }

    /// Whether a `Cookie` header may carry this cookie, by name or encoded.
    fn may_mention(&self, header: &[u8]) -> bool {
        self.finder.find(header).is_some() || memchr::memchr(b'%', header).is_some()
    }

    /// `header` without this cookie's pairs: `None` when it carries none
    /// (keep it as it is), `Some(None)` when nothing else is left. `on_named`
    /// sees each removed pair.
    fn without_cookie(
        &self,
        header: &HeaderValue,
        on_named: &mut impl FnMut(&HeaderValue, &[u8]) -> Result<(), AuthError>,
    ) -> Result<Option<Option<HeaderValue>>, AuthError> {
        let bytes = header.as_bytes();
        if !self.may_mention(bytes) {
            return Ok(None);
        }
        let mut kept = Vec::new();
        let mut removed = false;
        for pair in bytes.split(|&b| b == b';').map(<[u8]>::trim_ascii) {
            if pair.is_empty() {
                continue;
            }
            if self.is_named_pair(pair) {
                removed = true;
                on_named(header, pair)?;
                continue;
            }
            if kept.is_empty() {
                kept.reserve_exact(bytes.len());
            } else {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
        if !removed {
            return Ok(None);
        }
        if kept.is_empty() {
            return Ok(Some(None));
        }
        // Handed over, not copied.
        HeaderValue::from_maybe_shared(Bytes::from(kept))
            .map(|value| Some(Some(value)))
            .map_err(|_| Self::cookie_malformed())
    }

    fn cookie_malformed() -> AuthError {
        AuthError::new(AuthErrorKind::Malformed)
            .with_via(SourceKind::Cookie)
            .with_detail("cookie header cannot be rebuilt")
    }

    /// Rewrite the `Cookie` headers without this cookie; `on_named` sees each
    /// removed `name=value` pair and the header it was in. Every other cookie
    /// keeps its bytes exactly (non-UTF-8 included); headers that do not carry
    /// the cookie are kept as they are; nothing changes when no pair was
    /// removed.
    fn rewrite(
        &self,
        parts: &mut Parts,
        mut on_named: impl FnMut(&HeaderValue, &[u8]) -> Result<(), AuthError>,
    ) -> Result<(), AuthError> {
        // The usual case, one `Cookie` header: replaced in place.
        let mut headers = parts.headers.get_all(COOKIE).iter();
        let (Some(first), None) = (headers.next(), headers.next()) else {
            return self.rewrite_several(parts, on_named);
        };
        match self.without_cookie(first, &mut on_named)? {
            None => {}
            Some(Some(value)) => {
                parts.headers.insert(COOKIE, value);
            }
            Some(None) => {
                parts.headers.remove(COOKIE);
            }
        }
        Ok(())
    }

    fn rewrite_several(
        &self,
        parts: &mut Parts,
        mut on_named: impl FnMut(&HeaderValue, &[u8]) -> Result<(), AuthError>,
    ) -> Result<(), AuthError> {
        // Headers that do not carry the cookie are cloned (a reference count
        // on the parsed request's bytes) in case another one is rewritten.
        let mut kept_headers = Vec::new();
        let mut removed = false;
        for header in parts.headers.get_all(COOKIE) {
            match self.without_cookie(header, &mut on_named)? {
                None => kept_headers.push(header.clone()),
                Some(kept) => {
                    removed = true;
                    kept_headers.extend(kept);
                }
            }
        }
        if removed {
            parts.headers.remove(COOKIE);
            for value in kept_headers {
                parts.headers.append(COOKIE, value);
            }
        }
        Ok(())
    }
}

impl CredentialSource for Cookie {
    fn extract(&self, parts: &mut Parts) -> Result<Option<Credential>, AuthError> {
        // One pass: find the cookie and rebuild the headers without it.
        let mut found: Option<Credential> = None;
        self.rewrite(parts, |header, pair| {
            if found.is_some() {
                return Err(AuthError::new(AuthErrorKind::Ambiguous).with_via(SourceKind::Cookie));
            }
            // Only the named pair goes through the cookie crate.
            let cookie = std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| cookie::Cookie::parse(pair).ok())
                .ok_or_else(|| {
                    AuthError::new(AuthErrorKind::Malformed)
                        .with_via(SourceKind::Cookie)
                        .with_detail("the session cookie does not parse")
                })?;
            check_len(cookie.value().len(), self.max_len, SourceKind::Cookie)?;
            found = Some(Credential::in_header(
                SourceKind::Cookie,
                header,
                cookie.value(),
            ));
            Ok(())
        })?;
        match found {
            Some(value) => non_empty(value),
            None => Ok(None),
        }
    }

    fn strip(&self, parts: &mut Parts) -> Result<(), AuthError> {
        self.rewrite(parts, |_, _| Ok(()))
    }

    fn uses_cookies(&self) -> bool {
        true
    }
}

/// `Authorization: Bearer <token>` ([RFC 6750 §2.1]); the scheme is matched
/// case-insensitively. A present `Authorization` header that is empty or of
/// another scheme is an [`Invalid`](AuthErrorKind::Invalid) credential, not an
/// absent one.
///
/// [RFC 6750 §2.1]: https://www.rfc-editor.org/rfc/rfc6750#section-2.1
#[derive(Clone, Copy, Debug, Default)]
pub struct Bearer;

const BEARER_MAX_LEN: usize = DEFAULT_MAX_LEN;

fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let (scheme, token) = text.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl CredentialSource for Bearer {
    fn extract(&self, parts: &mut Parts) -> Result<Option<Credential>, AuthError> {
        // One lookup through the entry: read, check, remove.
        let Entry::Occupied(entry) = parts.headers.entry(AUTHORIZATION) else {
            return Ok(None);
        };
        if entry.iter().nth(1).is_some() {
            return Err(AuthError::new(AuthErrorKind::Ambiguous).with_via(SourceKind::Header));
        }
        let value = entry.get();
        check_len(
            value.len(),
            BEARER_MAX_LEN + "Bearer ".len(),
            SourceKind::Header,
        )?;
        let token = bearer_token(value).ok_or_else(|| {
            AuthError::new(AuthErrorKind::Invalid)
                .with_via(SourceKind::Header)
                .with_detail("authorization header is not a bearer token")
        })?;
        // The token stays in the header's bytes: nothing is copied.
        let credential = Credential::in_header(SourceKind::Header, value, token);
        entry.remove();
        Ok(Some(credential))
    }

    fn strip(&self, parts: &mut Parts) -> Result<(), AuthError> {
        // The scheme as `extract` reads it: after any leading whitespace.
        let is_bearer = parts.headers.get_all(AUTHORIZATION).iter().any(|v| {
            v.as_bytes()
                .trim_ascii_start()
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer"))
        });
        if is_bearer {
            parts.headers.remove(AUTHORIZATION);
        }
        Ok(())
    }
}

/// The whole value of a named header, e.g. `X-Api-Key`.
#[derive(Clone, Debug)]
pub struct Header {
    name: HeaderName,
    max_len: usize,
}

impl Header {
    /// The header called `name`.
    pub fn named(name: HeaderName) -> Self {
        Self {
            name,
            max_len: DEFAULT_MAX_LEN,
        }
    }

    /// Cap on the header value's length in bytes.
    #[must_use]
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }
}

impl CredentialSource for Header {
    fn extract(&self, parts: &mut Parts) -> Result<Option<Credential>, AuthError> {
        let mut values = parts.headers.get_all(&self.name).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(AuthError::new(AuthErrorKind::Ambiguous).with_via(SourceKind::Header));
        }
        check_len(value.len(), self.max_len, SourceKind::Header)?;
        let text = value
            .to_str()
            .map_err(|_| {
                AuthError::new(AuthErrorKind::Malformed)
                    .with_via(SourceKind::Header)
                    .with_detail("header value is not visible ASCII")
            })?
            .trim();
        let credential = Credential::in_header(SourceKind::Header, value, text);
        parts.headers.remove(&self.name);
        non_empty(credential)
    }

    fn strip(&self, parts: &mut Parts) -> Result<(), AuthError> {
        parts.headers.remove(&self.name);
        Ok(())
    }
}

/// A token carried as an entry of `Sec-WebSocket-Protocol`, e.g.
/// `Sec-WebSocket-Protocol: bearer.<jwt>, chat` — the only header a browser's
/// `new WebSocket(url, protocols)` can set.
///
/// The token entry is removed from the header passed on, so the handler sees
/// only the real protocols and selects one of them (axum's
/// `WebSocketUpgrade::protocols(["chat"])`). A request that offers the token
/// entry and no real protocol is [`Malformed`](AuthErrorKind::Malformed): the
/// server could only answer by echoing the token (which must never happen) or
/// by selecting nothing, and a browser drops a socket whose offered protocols
/// were all ignored.
///
/// The token must consist of `token` characters ([RFC 6455 §4.1]); base64url
/// JWTs and this crate's tickets do.
///
/// [RFC 6455 §4.1]: https://www.rfc-editor.org/rfc/rfc6455#section-4.1
#[derive(Clone, Debug)]
pub struct Subprotocol {
    prefix: Cow<'static, str>,
    max_len: usize,
}

impl Subprotocol {
    /// Entries starting with `prefix` (for example `"bearer."`) carry the token.
    pub fn prefix(prefix: impl Into<Cow<'static, str>>) -> Self {
        Self {
            prefix: prefix.into(),
            max_len: DEFAULT_MAX_LEN,
        }
    }

    /// Cap on the token's length in bytes.
    #[must_use]
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    fn malformed(detail: &'static str) -> AuthError {
        AuthError::new(AuthErrorKind::Malformed)
            .with_via(SourceKind::Subprotocol)
            .with_detail(detail)
    }

    /// Call `visit` with every non-empty entry of every
    /// `Sec-WebSocket-Protocol` header, in order.
    fn for_each_entry<'a>(
        parts: &'a Parts,
        mut visit: impl FnMut(&'a HeaderValue, &'a str) -> Result<(), AuthError>,
    ) -> Result<(), AuthError> {
        for header in parts.headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
            let text = header
                .to_str()
                .map_err(|_| Self::malformed("subprotocol header is not visible ASCII"))?;
            for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                visit(header, entry)?;
            }
        }
        Ok(())
    }

    /// Rewrite `Sec-WebSocket-Protocol` without the token entries;
    /// `on_token` sees each removed token (prefix stripped). Whether any real
    /// protocol is left.
    fn rewrite(
        &self,
        parts: &mut Parts,
        mut on_token: impl FnMut(&HeaderValue, &str) -> Result<(), AuthError>,
    ) -> Result<bool, AuthError> {
        let mut kept = String::new();
        let mut removed = false;
        Self::for_each_entry(parts, |header, entry| {
            match entry.strip_prefix(&*self.prefix) {
                Some(token) => {
                    removed = true;
                    on_token(header, token)?;
                }
                None => {
                    if !kept.is_empty() {
                        kept.push_str(", ");
                    }
                    kept.push_str(entry);
                }
            }
            Ok(())
        })?;
        if removed {
            if kept.is_empty() {
                parts.headers.remove(SEC_WEBSOCKET_PROTOCOL);
            } else {
                let left = !kept.is_empty();
                // Handed over, not copied.
                let value = HeaderValue::from_maybe_shared(Bytes::from(kept))
                    .map_err(|_| Self::malformed("subprotocol header cannot be rebuilt"))?;
                parts.headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
                return Ok(left);
            }
        }
        Ok(!kept.is_empty())
    }
}

impl CredentialSource for Subprotocol {
    fn extract(&self, parts: &mut Parts) -> Result<Option<Credential>, AuthError> {
        if !parts.headers.contains_key(SEC_WEBSOCKET_PROTOCOL) {
            return Ok(None);
        }
        // One pass: find the token, keep the real protocols.
        let mut found = None;
        let protocols_left = self.rewrite(parts, |header, token| {
            if found.is_some() {
                return Err(
                    AuthError::new(AuthErrorKind::Ambiguous).with_via(SourceKind::Subprotocol)
                );
            }
            check_len(token.len(), self.max_len, SourceKind::Subprotocol)?;
            found = Some(Credential::in_header(
                SourceKind::Subprotocol,
                header,
                token,
            ));
            Ok(())
        })?;
        let Some(token) = found else {
            return Ok(None);
        };
        if !protocols_left {
            return Err(Self::malformed(
                "subprotocol token offered without an application protocol",
            ));
        }
        non_empty(token)
    }

    fn strip(&self, parts: &mut Parts) -> Result<(), AuthError> {
        let mut removed = false;
        let protocols_left = self.rewrite(parts, |_, _| {
            removed = true;
            Ok(())
        })?;
        if removed && !protocols_left {
            return Err(Self::malformed(
                "subprotocol token offered without an application protocol",
            ));
        }
        Ok(())
    }
}

macro_rules! tuple_source {
    ($($name:ident),+) => {
        impl<$($name: CredentialSource),+> CredentialSource for ($($name,)+) {
            #[allow(non_snake_case)]
            fn extract(&self, parts: &mut Parts) -> Result<Option<Credential>, AuthError> {
                let ($($name,)+) = self;
                let mut found = None;
                $(
                    if found.is_none() {
                        found = $name.extract(parts)?;
                    } else {
                        $name.strip(parts)?;
                    }
                )+
                Ok(found)
            }

            #[allow(non_snake_case)]
            fn strip(&self, parts: &mut Parts) -> Result<(), AuthError> {
                let ($($name,)+) = self;
                $($name.strip(parts)?;)+
                Ok(())
            }

            #[allow(non_snake_case)]
            fn uses_cookies(&self) -> bool {
                let ($($name,)+) = self;
                false $(|| $name.uses_cookies())+
            }

            #[allow(non_snake_case)]
            fn visit_query_params(&self, visit: &mut dyn FnMut(&str)) {
                let ($($name,)+) = self;
                $($name.visit_query_params(visit);)+
            }

            #[allow(non_snake_case)]
            fn visit_sources(&self, visit: &mut dyn FnMut(bool)) {
                let ($($name,)+) = self;
                $($name.visit_sources(visit);)+
            }
        }
    };
}

tuple_source!(A);
tuple_source!(A, B);
tuple_source!(A, B, C);
tuple_source!(A, B, C, D);
tuple_source!(A, B, C, D, E);

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).unwrap().into_parts().0
    }

    fn kind(r: Result<Option<Credential>, AuthError>) -> AuthErrorKind {
        r.unwrap_err().kind()
    }

    #[test]
    fn query_decodes_and_strips_keeping_the_rest() {
        let mut p = parts(Request::get("/ws?a=%20x&ticket=ab%2Bc+d&b=2"));
        let c = Query::param("ticket").extract(&mut p).unwrap().unwrap();
        assert_eq!(c.expose_secret(), "ab+c d");
        assert_eq!(c.via(), SourceKind::Query);
        assert_eq!(p.uri, "/ws?a=%20x&b=2");
    }

    #[test]
    fn query_only_param_drops_question_mark_and_keeps_authority() {
        let mut p = parts(Request::get("https://example.com/ws?ticket=t"));
        Query::param("ticket").extract(&mut p).unwrap().unwrap();
        assert_eq!(p.uri, "https://example.com/ws");
    }

    #[test]
    fn query_rejects_duplicates_even_when_encoded() {
        let mut p = parts(Request::get("/ws?ticket=a&tick%65t=b"));
        assert_eq!(
            kind(Query::param("ticket").extract(&mut p)),
            AuthErrorKind::Ambiguous
        );
    }

    #[test]
    fn query_absent_empty_oversize_and_bad_utf8() {
        let q = Query::param("ticket").max_len(4);
        assert!(q
            .extract(&mut parts(Request::get("/ws?x=1")))
            .unwrap()
            .is_none());
        assert!(q
            .extract(&mut parts(Request::get("/ws")))
            .unwrap()
            .is_none());
        assert_eq!(
            kind(q.extract(&mut parts(Request::get("/ws?ticket=")))),
            AuthErrorKind::Invalid
        );
        assert_eq!(
            kind(q.extract(&mut parts(Request::get("/ws?ticket=12345")))),
            AuthErrorKind::TooLarge
        );
        assert_eq!(
            kind(q.extract(&mut parts(Request::get("/ws?ticket=%FF")))),
            AuthErrorKind::Malformed
        );
    }

    #[test]
    fn cookie_reads_one_and_keeps_the_others() {
        let mut p = parts(
            Request::get("/ws")
                .header("cookie", "theme=dark; session=s1; lang=en")
                .header("cookie", "other=1"),
        );
        let c = Cookie::named("session").extract(&mut p).unwrap().unwrap();
        assert_eq!(c.expose_secret(), "s1");
        let left: Vec<_> = p.headers.get_all(COOKIE).iter().collect();
        assert_eq!(left, ["theme=dark; lang=en", "other=1"]);
    }

    #[test]
    fn cookie_prefix_names_do_not_match_and_duplicates_reject() {
        let mut p = parts(Request::get("/ws").header("cookie", "session_old=x"));
        assert!(Cookie::named("session").extract(&mut p).unwrap().is_none());
        let mut p = parts(
            Request::get("/ws")
                .header("cookie", "session=a")
                .header("cookie", "session=b"),
        );
        assert_eq!(
            kind(Cookie::named("session").extract(&mut p)),
            AuthErrorKind::Ambiguous
        );
    }

    #[test]
    fn cookie_names_are_read_percent_decoded_like_cookie_jars_do() {
        let mut p = parts(Request::get("/ws").header("cookie", "sess%69on=s1; lang=en"));
        let c = Cookie::named("session").extract(&mut p).unwrap().unwrap();
        assert_eq!(c.expose_secret(), "s1");
        assert_eq!(p.headers[COOKIE], "lang=en");
        let mut p = parts(Request::get("/ws").header("cookie", "session=a; %73ession=b"));
        assert_eq!(
            kind(Cookie::named("session").extract(&mut p)),
            AuthErrorKind::Ambiguous
        );
    }

    #[test]
    fn cookie_rewrite_keeps_other_cookies_bytes_exactly() {
        let raw: &[u8] = b"theme=d\xe9j\xe0; session=s1; x=\xff\"q\"";
        let mut p =
            parts(Request::get("/ws").header("cookie", HeaderValue::from_bytes(raw).unwrap()));
        let c = Cookie::named("session").extract(&mut p).unwrap().unwrap();
        assert_eq!(c.expose_secret(), "s1");
        assert_eq!(
            p.headers[COOKIE].as_bytes(),
            b"theme=d\xe9j\xe0; x=\xff\"q\""
        );
        // A header without the cookie is not touched at all.
        let untouched = HeaderValue::from_bytes(b"a=\xff;;b=1 ").unwrap();
        let mut p = parts(
            Request::get("/ws")
                .header("cookie", untouched.clone())
                .header("cookie", "session=s1"),
        );
        Cookie::named("session").extract(&mut p).unwrap().unwrap();
        assert_eq!(
            p.headers.get_all(COOKIE).iter().collect::<Vec<_>>(),
            [untouched]
        );
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_invalid() {
        let mut p = parts(Request::get("/ws").header("authorization", "bEaReR  tok"));
        let c = Bearer.extract(&mut p).unwrap().unwrap();
        assert_eq!(c.expose_secret(), "tok");
        assert!(!p.headers.contains_key(AUTHORIZATION));

        for bad in ["Basic dXNlcg==", "Bearer", "Bearer   ", ""] {
            let mut p = parts(Request::get("/ws").header("authorization", bad));
            assert_eq!(
                kind(Bearer.extract(&mut p)),
                AuthErrorKind::Invalid,
                "{bad}"
            );
        }
        let mut p = parts(
            Request::get("/ws")
                .header("authorization", "Bearer a")
                .header("authorization", "Bearer b"),
        );
        assert_eq!(kind(Bearer.extract(&mut p)), AuthErrorKind::Ambiguous);
    }

    #[test]
    fn subprotocol_token_is_removed_and_protocols_kept() {
        let mut p =
            parts(Request::get("/ws").header("sec-websocket-protocol", "bearer.abc.def, chat, v2"));
        let c = Subprotocol::prefix("bearer.")
            .extract(&mut p)
            .unwrap()
            .unwrap();
        assert_eq!(c.expose_secret(), "abc.def");
        assert_eq!(p.headers[SEC_WEBSOCKET_PROTOCOL], "chat, v2");
    }

    #[test]
    fn subprotocol_alone_or_twice_rejects() {
        let s = Subprotocol::prefix("bearer.");
        let mut p = parts(Request::get("/ws").header("sec-websocket-protocol", "bearer.abc"));
        assert_eq!(kind(s.extract(&mut p)), AuthErrorKind::Malformed);
        let mut p = parts(
            Request::get("/ws")
                .header("sec-websocket-protocol", "bearer.a, chat")
                .header("sec-websocket-protocol", "bearer.b"),
        );
        assert_eq!(kind(s.extract(&mut p)), AuthErrorKind::Ambiguous);
        let mut p = parts(Request::get("/ws").header("sec-websocket-protocol", "chat"));
        assert!(s.extract(&mut p).unwrap().is_none());
    }

    #[test]
    fn tuple_first_present_wins_and_others_are_stripped() {
        let sources = (
            Bearer,
            Query::param("ticket"),
            Subprotocol::prefix("bearer."),
        );
        let mut p = parts(
            Request::get("/ws?ticket=t")
                .header("authorization", "Bearer h")
                .header("sec-websocket-protocol", "bearer.s, chat"),
        );
        let c = sources.extract(&mut p).unwrap().unwrap();
        assert_eq!(c.via(), SourceKind::Header);
        assert_eq!(c.expose_secret(), "h");
        assert_eq!(p.uri, "/ws");
        assert_eq!(p.headers[SEC_WEBSOCKET_PROTOCOL], "chat");
    }
}
