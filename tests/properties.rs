//! Properties of the parsers that face the network, over generated hostile
//! input: the credential sources' extract-and-strip, the `Origin` check, the
//! log redactor, and the first-message readers with the lifetime guard that
//! relies on them.
//!
//! Every property runs 256 cases from a fixed seed, so each run checks the
//! same inputs; `PROPTEST_CASES` and `PROPTEST_RNG_SEED` override both.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::future::{ready, Ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream, StreamExt};
use http::header::{
    HeaderName, HeaderValue, AUTHORIZATION, COOKIE, ORIGIN, SEC_WEBSOCKET_PROTOCOL,
};
use http::request::Parts;
use http::{HeaderMap, Request};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::RngSeed;
use serde::de::IgnoredAny;
use serde_json::Value;
use tower_ws_auth::first_message::{
    AuthProtocol, GraphqlTransportWs, JsonAuth, LifetimeGuard, MessageKind, WsMessage,
};
use tower_ws_auth::source::{
    Bearer, Cookie, CredentialSource, Header, Query, Subprotocol, DEFAULT_MAX_LEN,
};
use tower_ws_auth::{AuthError, Credential, OriginPolicy, Redactor, Verified};

/// Fixed cases and seed: every run checks the same inputs. Shrinking is
/// bounded so that a failure is reported within seconds. proptest applies
/// `PROPTEST_*` variables on top of this, so they still win.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x7773_2d61_7574_6821),
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

const CAP: usize = DEFAULT_MAX_LEN;
const TOKEN_PREFIX: &str = "bearer.";

fn api_key() -> HeaderName {
    HeaderName::from_static("x-api-key")
}

fn pick<T: Clone + fmt::Debug + 'static>(
    choices: &'static [T],
) -> impl Strategy<Value = T> + Clone {
    select(choices)
}

/// `word` with each letter written as it is or percent-encoded (either hex
/// case): every spelling that decodes to `word`.
fn encoded(word: &'static str) -> impl Strategy<Value = String> + Clone {
    proptest::collection::vec(0u8..5, word.len()).prop_map(move |styles| {
        word.bytes()
            .zip(styles)
            .map(|(b, style)| match style {
                0..=2 => char::from(b).to_string(),
                3 => format!("%{b:02x}"),
                _ => format!("%{b:02X}"),
            })
            .collect()
    })
}

/// `word` with each letter kept, upper-cased, or percent-encoded (either hex
/// case, of the letter or of its upper case): mostly near misses.
fn spelled(word: &'static str) -> impl Strategy<Value = String> + Clone {
    proptest::collection::vec(0u8..7, word.len()).prop_map(move |styles| {
        word.bytes()
            .zip(styles)
            .map(|(b, style)| match style {
                0..=2 => char::from(b).to_string(),
                3 => char::from(b.to_ascii_uppercase()).to_string(),
                4 => format!("%{b:02x}"),
                5 => format!("%{b:02X}"),
                _ => format!("%{:02X}", b.to_ascii_uppercase()),
            })
            .collect()
    })
}

/// `unit` repeated to a length a few bytes either side of the 8 KiB cap.
fn near_cap(unit: &'static str) -> impl Strategy<Value = String> + Clone {
    (CAP - 3..=CAP + 8).prop_map(move |len| {
        let mut text = unit.repeat(len / unit.len() + 1);
        text.truncate(len);
        text
    })
}

/// A byte `HeaderValue::from_bytes` accepts: visible ASCII, space, tab and
/// obs-text (0x80-0xFF).
fn header_byte() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![
        8 => 0x21u8..=0x7e,
        1 => Just(b' '),
        1 => Just(b'\t'),
        2 => 0x80u8..=0xff,
    ]
}

fn header_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).expect("generated from allowed bytes")
}

// ---------------------------------------------------------------------------
// Request heads
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Head {
    uri: String,
    headers: Vec<(&'static str, HeaderValue)>,
}

/// `text`, or when longer than 80 characters its first 60 and its length.
fn abbreviated(text: &str) -> String {
    let count = text.chars().count();
    if count <= 80 {
        return text.to_owned();
    }
    let start: String = text.chars().take(60).collect();
    format!("{start}… ({count} characters)")
}

fn shown(value: &HeaderValue) -> String {
    abbreviated(&format!("{value:?}"))
}

// By hand: values near the 8 KiB cap would fill a failure report.
impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, String)> = self
            .headers
            .iter()
            .map(|(name, value)| (*name, shown(value)))
            .collect();
        f.debug_struct("Head")
            .field("uri", &abbreviated(&self.uri))
            .field("headers", &headers)
            .finish()
    }
}

impl Head {
    fn parts(&self) -> Parts {
        let mut request = Request::get(self.uri.as_str());
        for (name, value) in &self.headers {
            request = request.header(*name, value.clone());
        }
        request.body(()).expect("valid head").into_parts().0
    }
}

fn query_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => encoded("ticket"),
        2 => (
            pick(&["", "", "", "+", "%20", "%00", "%FF", "s", "%", "%2"]),
            spelled("ticket"),
            pick(&["", "", "", "+", "%20", "s", "%", "%C3", "%3D"]),
        )
            .prop_map(|(before, name, after)| format!("{before}{name}{after}")),
        2 => "[a-z_]{1,8}",
        1 => pick(&["ticke", "tickets", "t%69cket", "%74%69%63%6B%65%74", "amp;ticket", ""])
            .prop_map(String::from),
    ]
}

fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "([A-Za-z0-9._~!$'()*,:@/?;=+-]|%[0-9A-Fa-f]{2}|%|%z|é){0,12}",
        1 => Just(String::new()),
        1 => near_cap("a"),
        1 => near_cap("%41"),
        1 => near_cap("+"),
    ]
}

fn query() -> impl Strategy<Value = Option<String>> {
    let pair =
        (query_key(), proptest::option::weighted(0.85, query_value())).prop_map(|(key, value)| {
            match value {
                Some(value) => format!("{key}={value}"),
                None => key,
            }
        });
    proptest::option::weighted(
        0.9,
        proptest::collection::vec(pair, 0..4).prop_map(|pairs| pairs.join("&")),
    )
}

fn cookie_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (pick(&["", "", " "]), encoded("session"), pick(&["", "", " "]))
            .prop_map(|(before, name, after)| format!("{before}{name}{after}")),
        3 => (
            pick(&["", "", " ", "\t"]),
            spelled("session"),
            pick(&["", "", "", " ", "s", "_old", "%", "%00"]),
        )
            .prop_map(|(before, name, after)| format!("{before}{name}{after}")),
        2 => "[a-z_]{1,8}",
        1 => pick(&["Session", "SESSION", "sessio", "%73%65%73%73%69%6f%6e", "sess%69on", "%", ""])
            .prop_map(String::from),
    ]
    .prop_map(String::into_bytes)
}

fn cookie_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(header_byte(), 0..12),
        1 => Just(Vec::new()),
        1 => near_cap("v").prop_map(String::into_bytes),
        1 => pick(&["\"quoted\"", "a=b", "%73", "é"]).prop_map(|v| v.as_bytes().to_vec()),
    ]
}

fn cookie_header() -> impl Strategy<Value = HeaderValue> {
    let pair = (
        cookie_name(),
        pick(&["=", "=", "=", " = ", ""]),
        cookie_value(),
    )
        .prop_map(|(name, eq, value)| [name, eq.as_bytes().to_vec(), value].concat());
    (
        proptest::collection::vec(pair, 1..4),
        proptest::collection::vec(pick(&["; ", "; ", ";", ";;", " ; ", ";\t", "; ;"]), 3),
        pick(&["", "", " ", ";"]),
    )
        .prop_map(|(pairs, separators, edge)| {
            let mut bytes = edge.as_bytes().to_vec();
            for (i, pair) in pairs.iter().enumerate() {
                if i > 0 {
                    bytes.extend_from_slice(separators[i % separators.len()].as_bytes());
                }
                bytes.extend_from_slice(pair);
            }
            bytes.extend_from_slice(edge.as_bytes());
            header_value(&bytes)
        })
}

fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => "[A-Za-z0-9._~+/=-]{0,20}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(header_byte(), 0..12),
        1 => near_cap("t").prop_map(String::into_bytes),
    ]
}

fn authorization() -> impl Strategy<Value = HeaderValue> {
    (
        pick(&["", "", "", " ", "\t"]),
        pick(&[
            "Bearer", "Bearer", "Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Bearerx", "Bear",
            "",
        ]),
        pick(&[" ", " ", " ", "  ", "\t", ""]),
        token(),
        pick(&["", "", " ", "\t"]),
    )
        .prop_map(|(lead, scheme, gap, token, trail)| {
            header_value(
                &[
                    lead.as_bytes(),
                    scheme.as_bytes(),
                    gap.as_bytes(),
                    &token,
                    trail.as_bytes(),
                ]
                .concat(),
            )
        })
}

fn api_key_value() -> impl Strategy<Value = HeaderValue> {
    (
        pick(&["", "", " ", "\t"]),
        token(),
        pick(&["", "", " ", "\t"]),
    )
        .prop_map(|(lead, token, trail)| {
            header_value(&[lead.as_bytes(), &token, trail.as_bytes()].concat())
        })
}

fn protocol_header() -> impl Strategy<Value = HeaderValue> {
    let token = prop_oneof![6 => "[A-Za-z0-9._-]{0,16}", 1 => near_cap("p")];
    let entry = prop_oneof![
        3 => pick(&["chat", "v2.graphql", "graphql-transport-ws", "", " "])
            .prop_map(|e| e.as_bytes().to_vec()),
        3 => (pick(&["bearer.", "bearer.", "Bearer.", "bearer", "xbearer.", "bearer..", " bearer."]), token)
            .prop_map(|(prefix, token)| format!("{prefix}{token}").into_bytes()),
        1 => proptest::collection::vec(header_byte(), 0..6),
    ];
    (
        proptest::collection::vec(entry, 1..4),
        proptest::collection::vec(pick(&[",", ", ", " , ", ",,", ",\t"]), 3),
    )
        .prop_map(|(entries, separators)| {
            let mut bytes = Vec::new();
            for (i, entry) in entries.iter().enumerate() {
                if i > 0 {
                    bytes.extend_from_slice(separators[i % separators.len()].as_bytes());
                }
                bytes.extend_from_slice(entry);
            }
            header_value(&bytes)
        })
}

fn other_header() -> impl Strategy<Value = (&'static str, HeaderValue)> {
    (
        pick(&["host", "x-other", "origin", "user-agent", "x-ticket"]),
        proptest::collection::vec(header_byte(), 0..10),
    )
        .prop_map(|(name, value)| (name, header_value(&value)))
}

fn head() -> impl Strategy<Value = Head> {
    use proptest::collection::vec;
    (
        pick(&[
            "/ws",
            "/",
            "/a%20b/ws",
            "https://example.com/ws",
            "http://example.com",
        ]),
        query(),
        vec(cookie_header(), 0..3),
        vec(authorization(), 0..3),
        vec(api_key_value(), 0..3),
        vec(protocol_header(), 0..3),
        vec(other_header(), 0..3),
    )
        .prop_map(|(path, query, cookies, auths, keys, protocols, others)| {
            let uri = match query {
                Some(query) => format!("{path}?{query}"),
                None => path.to_owned(),
            };
            let mut headers = others;
            headers.extend(cookies.into_iter().map(|v| ("cookie", v)));
            headers.extend(auths.into_iter().map(|v| ("authorization", v)));
            headers.extend(keys.into_iter().map(|v| ("x-api-key", v)));
            headers.extend(protocols.into_iter().map(|v| ("sec-websocket-protocol", v)));
            Head { uri, headers }
        })
}

// ---------------------------------------------------------------------------
// What each source reads, stated independently of the crate
// ---------------------------------------------------------------------------

/// `%XX` decoding; a `%` not followed by two hex digits stays as it is.
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .filter(|h| raw[i] == b'%' && h.iter().all(u8::is_ascii_hexdigit));
        match hex {
            Some(h) => {
                let h = std::str::from_utf8(h).expect("hex digits");
                out.push(u8::from_str_radix(h, 16).expect("hex digits"));
                i += 3;
            }
            None => {
                out.push(raw[i]);
                i += 1;
            }
        }
    }
    out
}

/// A query component as an application's form parser reads it.
fn form_decode(raw: &str) -> Option<String> {
    String::from_utf8(percent_decode(raw.replace('+', " ").as_bytes())).ok()
}

fn query_pairs(query: Option<&str>) -> Vec<&str> {
    query.map(|q| q.split('&').collect()).unwrap_or_default()
}

fn names_ticket(pair: &str) -> bool {
    let key = pair.split_once('=').map_or(pair, |(key, _)| key);
    form_decode(key).is_some_and(|key| key == "ticket")
}

fn cookie_pairs(header: &[u8]) -> Vec<&[u8]> {
    header
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|pair| !pair.is_empty())
        .collect()
}

/// A cookie named `session`, by name or percent-encoded name.
fn names_session(pair: &[u8]) -> bool {
    let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
    percent_decode(name.trim_ascii()) == b"session"
}

/// The `Cookie` headers once the session cookie is gone: a header without it
/// is kept as it is, one with it keeps its other cookies byte for byte.
fn cookies_without_session(headers: &HeaderMap) -> Vec<Vec<u8>> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|header| {
            let pairs = cookie_pairs(header.as_bytes());
            if !pairs.iter().any(|pair| names_session(pair)) {
                return Some(header.as_bytes().to_vec());
            }
            let kept: Vec<&[u8]> = pairs.into_iter().filter(|p| !names_session(p)).collect();
            (!kept.is_empty()).then(|| kept.join(&b"; "[..]))
        })
        .collect()
}

/// The token of an `Authorization` value that reads as a bearer credential.
fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Every `Sec-WebSocket-Protocol` entry, in order; `None` when a header is
/// not visible ASCII.
fn protocol_entries(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut entries = Vec::new();
    for header in headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
        let text = header.to_str().ok()?;
        entries.extend(
            text.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from),
        );
    }
    Some(entries)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Query,
    Cookie,
    Bearer,
    ApiKey,
    Subprotocol,
}

impl Part {
    fn header(self) -> Option<HeaderName> {
        match self {
            Part::Query => None,
            Part::Cookie => Some(COOKIE),
            Part::Bearer => Some(AUTHORIZATION),
            Part::ApiKey => Some(api_key()),
            Part::Subprotocol => Some(SEC_WEBSOCKET_PROTOCOL),
        }
    }
}

/// What `extract` must return for a request, from the request alone.
#[derive(Debug, PartialEq)]
enum Expected {
    Absent,
    Found(Option<String>),
    Refused,
    FoundOrRefused,
}

fn expected(part: Part, parts: &Parts) -> Expected {
    let headers = &parts.headers;
    match part {
        Part::Query => {
            let found: Vec<&str> = query_pairs(parts.uri.query())
                .into_iter()
                .filter(|pair| names_ticket(pair))
                .collect();
            match found[..] {
                [] => Expected::Absent,
                [pair] => {
                    let raw = pair.split_once('=').map_or("", |(_, value)| value);
                    match form_decode(raw) {
                        Some(value) if raw.len() <= CAP && !value.is_empty() => {
                            Expected::Found(Some(value))
                        }
                        _ => Expected::Refused,
                    }
                }
                _ => Expected::Refused,
            }
        }
        Part::Cookie => {
            let named = headers
                .get_all(COOKIE)
                .iter()
                .flat_map(|h| cookie_pairs(h.as_bytes()))
                .filter(|pair| names_session(pair))
                .count();
            match named {
                0 => Expected::Absent,
                1 => Expected::FoundOrRefused,
                _ => Expected::Refused,
            }
        }
        Part::Bearer => {
            let values: Vec<&HeaderValue> = headers.get_all(AUTHORIZATION).iter().collect();
            match values[..] {
                [] => Expected::Absent,
                [value] => match bearer_token(value) {
                    Some(token) if value.len() <= CAP + "Bearer ".len() => {
                        Expected::Found(Some(token.to_owned()))
                    }
                    _ => Expected::Refused,
                },
                _ => Expected::Refused,
            }
        }
        Part::ApiKey => {
            let values: Vec<&HeaderValue> = headers.get_all(api_key()).iter().collect();
            match values[..] {
                [] => Expected::Absent,
                [value] => match value.to_str().map(str::trim) {
                    Ok(key) if value.len() <= CAP && !key.is_empty() => {
                        Expected::Found(Some(key.to_owned()))
                    }
                    _ => Expected::Refused,
                },
                _ => Expected::Refused,
            }
        }
        Part::Subprotocol => {
            if !headers.contains_key(SEC_WEBSOCKET_PROTOCOL) {
                return Expected::Absent;
            }
            let Some(entries) = protocol_entries(headers) else {
                return Expected::Refused;
            };
            let (tokens, protocols): (Vec<&String>, Vec<&String>) = entries
                .iter()
                .partition(|entry| entry.starts_with(TOKEN_PREFIX));
            match tokens[..] {
                [] => Expected::Absent,
                [entry] => {
                    let token = &entry[TOKEN_PREFIX.len()..];
                    if protocols.is_empty() || token.is_empty() || token.len() > CAP {
                        Expected::Refused
                    } else {
                        Expected::Found(Some(token.to_owned()))
                    }
                }
                _ => Expected::Refused,
            }
        }
    }
}

fn check_expected(
    result: &Result<Option<Credential>, AuthError>,
    expected: &Expected,
) -> Result<(), TestCaseError> {
    match (expected, result) {
        (Expected::Absent, Ok(None))
        | (Expected::Found(None), Ok(Some(_)))
        | (Expected::Refused, Err(_))
        | (Expected::FoundOrRefused, Ok(Some(_)) | Err(_)) => Ok(()),
        (Expected::Found(Some(value)), Ok(Some(credential)))
            if credential.expose_secret() == value =>
        {
            Ok(())
        }
        (_, Ok(Some(credential))) => Err(TestCaseError::fail(format!(
            "expected {}, read {}",
            abbreviated(&format!("{expected:?}")),
            abbreviated(credential.expose_secret())
        ))),
        _ => Err(TestCaseError::fail(format!(
            "expected {}, got {result:?}",
            abbreviated(&format!("{expected:?}"))
        ))),
    }
}

/// `part`'s credential is gone from `after`, and the rest of what `part`
/// reads is kept. `bearer_removed`: the whole `Authorization` header must be
/// gone, as when `Bearer` itself read it.
fn check_gone(
    part: Part,
    before: &Parts,
    after: &Parts,
    bearer_removed: bool,
) -> Result<(), TestCaseError> {
    match part {
        Part::Query => {
            prop_assert_eq!(after.uri.scheme(), before.uri.scheme());
            prop_assert_eq!(after.uri.authority(), before.uri.authority());
            prop_assert_eq!(after.uri.path(), before.uri.path());
            let kept: Vec<&str> = query_pairs(before.uri.query())
                .into_iter()
                .filter(|pair| !names_ticket(pair))
                .collect();
            prop_assert_eq!(query_pairs(after.uri.query()), kept);
        }
        Part::Cookie => {
            let left: Vec<&[u8]> = after
                .headers
                .get_all(COOKIE)
                .iter()
                .map(HeaderValue::as_bytes)
                .collect();
            prop_assert!(
                !left.iter().flat_map(|h| cookie_pairs(h)).any(names_session),
                "a session cookie is left: {:?}",
                after
                    .headers
                    .get_all(COOKIE)
                    .iter()
                    .map(shown)
                    .collect::<Vec<_>>()
            );
            prop_assert_eq!(left, cookies_without_session(&before.headers));
        }
        Part::Bearer if bearer_removed => {
            prop_assert!(
                !after.headers.contains_key(AUTHORIZATION),
                "authorization left: {:?}",
                after
                    .headers
                    .get_all(AUTHORIZATION)
                    .iter()
                    .map(shown)
                    .collect::<Vec<_>>()
            );
        }
        Part::Bearer => {
            let left: Vec<&HeaderValue> = after.headers.get_all(AUTHORIZATION).iter().collect();
            prop_assert!(
                left.iter().all(|v| bearer_token(v).is_none()),
                "a bearer credential is left: {:?}",
                left.iter().map(|v| shown(v)).collect::<Vec<_>>()
            );
        }
        Part::ApiKey => {
            prop_assert!(!after.headers.contains_key(api_key()));
        }
        Part::Subprotocol => {
            let before_entries = protocol_entries(&before.headers);
            prop_assert!(before_entries.is_some(), "read a non-ASCII protocol header");
            let before_entries = before_entries.unwrap_or_default();
            let kept: Vec<&String> = before_entries
                .iter()
                .filter(|e| !e.starts_with(TOKEN_PREFIX))
                .collect();
            let after_entries = protocol_entries(&after.headers).unwrap_or_default();
            let removed = kept.len() < before_entries.len();
            prop_assert_eq!(after_entries.iter().collect::<Vec<_>>(), kept);
            if !removed {
                prop_assert_eq!(
                    after
                        .headers
                        .get_all(SEC_WEBSOCKET_PROTOCOL)
                        .iter()
                        .collect::<Vec<_>>(),
                    before
                        .headers
                        .get_all(SEC_WEBSOCKET_PROTOCOL)
                        .iter()
                        .collect::<Vec<_>>()
                );
            }
        }
    }
    Ok(())
}

/// Everything the sources in `read` do not read is untouched.
fn check_rest_kept(read: &[Part], before: &Parts, after: &Parts) -> Result<(), TestCaseError> {
    if !read.contains(&Part::Query) {
        prop_assert_eq!(&after.uri, &before.uri);
    }
    let touched: Vec<HeaderName> = read.iter().filter_map(|p| p.header()).collect();
    for name in before.headers.keys().chain(after.headers.keys()) {
        if touched.contains(name) {
            continue;
        }
        prop_assert_eq!(
            after.headers.get_all(name).iter().collect::<Vec<_>>(),
            before.headers.get_all(name).iter().collect::<Vec<_>>(),
            "header {}",
            name
        );
    }
    Ok(())
}

/// `source` reads `read` (in order). Checks extract and strip on `head`.
fn check_source(
    source: &impl CredentialSource,
    read: &[Part],
    head: &Head,
) -> Result<(), TestCaseError> {
    let before = head.parts();

    let mut after = head.parts();
    let result = source.extract(&mut after);
    match read {
        [part] => check_expected(&result, &expected(*part, &before))?,
        _ => {
            let absent = read
                .iter()
                .all(|p| expected(*p, &before) == Expected::Absent);
            prop_assert_eq!(matches!(result, Ok(None)), absent, "{:?}", result);
        }
    }
    match result {
        Ok(Some(_)) => {
            for part in read {
                check_gone(*part, &before, &after, read == [Part::Bearer])?;
            }
            check_rest_kept(read, &before, &after)?;
        }
        Ok(None) => {
            prop_assert_eq!(&after.uri, &before.uri);
            prop_assert_eq!(&after.headers, &before.headers);
        }
        Err(_) => {}
    }

    let mut stripped = head.parts();
    if source.strip(&mut stripped).is_ok() {
        for part in read {
            check_gone(*part, &before, &stripped, false)?;
        }
        check_rest_kept(read, &before, &stripped)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn query_source_takes_the_ticket_and_keeps_the_rest(head in head()) {
        check_source(&Query::param("ticket"), &[Part::Query], &head)?;
    }

    #[test]
    fn cookie_source_takes_the_cookie_and_keeps_the_rest(head in head()) {
        check_source(&Cookie::named("session"), &[Part::Cookie], &head)?;
    }

    #[test]
    fn bearer_source_takes_the_header_and_keeps_the_rest(head in head()) {
        check_source(&Bearer, &[Part::Bearer], &head)?;
    }

    #[test]
    fn header_source_takes_the_header_and_keeps_the_rest(head in head()) {
        check_source(&Header::named(api_key()), &[Part::ApiKey], &head)?;
    }

    #[test]
    fn subprotocol_source_takes_the_token_and_keeps_the_protocols(head in head()) {
        check_source(&Subprotocol::prefix(TOKEN_PREFIX), &[Part::Subprotocol], &head)?;
    }

    #[test]
    fn combined_sources_leave_no_credential_behind(head in head()) {
        let query_first = (
            Query::param("ticket"),
            Bearer,
            Cookie::named("session"),
            Subprotocol::prefix(TOKEN_PREFIX),
            Header::named(api_key()),
        );
        let read = [Part::Query, Part::Bearer, Part::Cookie, Part::Subprotocol, Part::ApiKey];
        check_source(&query_first, &read, &head)?;

        let bearer_first = (
            Bearer,
            Header::named(api_key()),
            Subprotocol::prefix(TOKEN_PREFIX),
            Cookie::named("session"),
            Query::param("ticket"),
        );
        let read = [Part::Bearer, Part::ApiKey, Part::Subprotocol, Part::Cookie, Part::Query];
        check_source(&bearer_first, &read, &head)?;
    }
}

// ---------------------------------------------------------------------------
// Origin
// ---------------------------------------------------------------------------

const SCHEMES: &[&str] = &["http", "https", "ws", "wss", "ftp", "chrome-extension"];
const HOSTS: &[&str] = &[
    "app.example.com",
    "127.0.0.1",
    "localhost",
    "[::1]",
    "[2001:db8::a]",
    "evil.example",
    "app.example.com.evil.example",
];
const PORTS: &[u16] = &[1, 80, 443, 3000, 8080, 65535];

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `text` with the letters whose bit is set in `mask` upper-cased.
fn recase(text: &str, mask: u64) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// `scheme://host[:port]`, in any letter case.
#[derive(Clone, Debug)]
struct WellFormed {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl WellFormed {
    fn render(&self) -> String {
        match self.port {
            Some(port) => format!("{}://{}:{port}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }

    /// Every `Origin` value that denotes this origin, lower-cased: the
    /// default port may be written or not, any other port must be.
    fn spellings(&self) -> Vec<String> {
        let scheme = self.scheme.to_ascii_lowercase();
        let host = self.host.to_ascii_lowercase();
        let default = default_port(&scheme);
        match self.port {
            Some(port) if Some(port) != default => vec![format!("{scheme}://{host}:{port}")],
            _ => {
                let mut all = vec![format!("{scheme}://{host}")];
                all.extend(default.map(|port| format!("{scheme}://{host}:{port}")));
                all
            }
        }
    }
}

/// A port choice: none, the scheme's default written out, or one of `PORTS`.
fn port_for(scheme: &str, choice: u8, other: Index) -> Option<u16> {
    match choice % 3 {
        0 => None,
        1 => default_port(&scheme.to_ascii_lowercase()),
        _ => Some(PORTS[other.index(PORTS.len())]),
    }
}

fn well_formed() -> impl Strategy<Value = WellFormed> {
    (
        pick(SCHEMES),
        pick(HOSTS),
        any::<u64>(),
        any::<u64>(),
        any::<u8>(),
        any::<Index>(),
    )
        .prop_map(
            |(scheme, host, scheme_case, host_case, port, other)| WellFormed {
                scheme: recase(scheme, scheme_case),
                host: recase(host, host_case),
                port: port_for(scheme, port, other),
            },
        )
}

/// An edit that may turn a well-formed origin into a hostile one.
#[derive(Clone, Debug)]
enum Edit {
    Append(&'static [u8]),
    Prepend(&'static [u8]),
    AfterScheme(&'static [u8]),
    Separator(&'static str),
    ZeroPadPort,
    Insert(Index, u8),
    Remove(Index),
    Replace(Index, u8),
}

fn edit_byte() -> impl Strategy<Value = u8> {
    prop_oneof![pick(b" \t/?#@:0.%[]_-Az".as_slice()), header_byte(),]
}

fn edit() -> impl Strategy<Value = Edit> {
    const APPENDED: &[&[u8]] = &[
        b"/",
        b"/ws",
        b"?",
        b"?x=1",
        b"#",
        b"#f",
        b" ",
        b"\t",
        b"%20",
        b":",
        b".",
        b"@evil.example",
        b"\xc3\xa9",
        b":443",
        b":80",
    ];
    const PREPENDED: &[&[u8]] = &[b" ", b"\t", b"x", b"//"];
    const AFTER_SCHEME: &[&[u8]] = &[b"user@", b"user:pass@", b" ", b"/"];
    prop_oneof![
        3 => pick(APPENDED).prop_map(Edit::Append),
        1 => pick(PREPENDED).prop_map(Edit::Prepend),
        1 => pick(AFTER_SCHEME).prop_map(Edit::AfterScheme),
        1 => pick(&[":/", ":///", "//", ":\\\\", ":"]).prop_map(Edit::Separator),
        1 => Just(Edit::ZeroPadPort),
        2 => (any::<Index>(), edit_byte()).prop_map(|(at, b)| Edit::Insert(at, b)),
        1 => any::<Index>().prop_map(Edit::Remove),
        1 => (any::<Index>(), edit_byte()).prop_map(|(at, b)| Edit::Replace(at, b)),
    ]
}

fn apply(origin: &str, edits: &[Edit]) -> Vec<u8> {
    let mut bytes = origin.as_bytes().to_vec();
    let find = |bytes: &[u8], needle: &[u8]| bytes.windows(needle.len()).position(|w| w == needle);
    for edit in edits {
        match edit {
            Edit::Append(tail) => bytes.extend_from_slice(tail),
            Edit::Prepend(head) => bytes = [head, &bytes[..]].concat(),
            Edit::AfterScheme(text) => {
                if let Some(at) = find(&bytes, b"://") {
                    bytes = [&bytes[..at + 3], text, &bytes[at + 3..]].concat();
                }
            }
            Edit::Separator(separator) => {
                if let Some(at) = find(&bytes, b"://") {
                    bytes = [&bytes[..at], separator.as_bytes(), &bytes[at + 3..]].concat();
                }
            }
            Edit::ZeroPadPort => {
                let authority = find(&bytes, b"://").map_or(0, |at| at + 3);
                let colon = bytes[authority..]
                    .iter()
                    .rposition(|&b| b == b':')
                    .map(|at| authority + at);
                match colon {
                    Some(at) if bytes[at + 1..].iter().all(u8::is_ascii_digit) => {
                        bytes.insert(at + 1, b'0');
                    }
                    _ => bytes.extend_from_slice(b":0443"),
                }
            }
            Edit::Insert(at, b) => {
                let at = at.index(bytes.len() + 1);
                bytes.insert(at, *b);
            }
            Edit::Remove(at) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                bytes.remove(at);
            }
            Edit::Replace(at, b) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                bytes[at] = *b;
            }
            Edit::Remove(_) | Edit::Replace(..) => {}
        }
    }
    bytes
}

/// How many `Origin` headers the request carries: mostly one.
fn origin_count() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 8 => Just(1usize), 1 => Just(2usize)]
}

fn origin_parts(origin: &[u8], count: usize, host: Option<&str>) -> Parts {
    let mut request = Request::get("/ws");
    if let Some(host) = host {
        request = request.header("host", host);
    }
    for _ in 0..count {
        request = request.header(ORIGIN, header_value(origin));
    }
    request.body(()).expect("valid head").into_parts().0
}

/// A scheme as RFC 3986 §3.1 spells one (lower-cased).
fn is_scheme(scheme: &str) -> bool {
    scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// A port as browsers write one: digits without leading zeros, in range.
fn canonical_port(digits: &str) -> Option<u16> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

/// Whether `origin` (lower-cased) is `scheme://host[:port]` for exactly this
/// host, at the same port as the `Host` header's (defaults filled in from the
/// origin's scheme).
fn same_origin_reference(origin: &str, host: &str, host_port: Option<u16>) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if !is_scheme(scheme) {
        return false;
    }
    let port = if rest == host {
        None
    } else {
        match rest.strip_prefix(host).and_then(|r| r.strip_prefix(':')) {
            Some(digits) => match canonical_port(digits) {
                Some(port) => Some(port),
                None => return false,
            },
            None => return false,
        }
    };
    let default = default_port(scheme);
    port.or(default) == host_port.or(default)
}

/// An allowlist, which entries are configured with a trailing `/`, an
/// origin, edits to it, and how many times it is sent.
type AllowlistCase = (Vec<WellFormed>, Vec<bool>, String, Vec<Edit>, usize);

fn allowlist_case() -> impl Strategy<Value = AllowlistCase> {
    (
        proptest::collection::vec(well_formed(), 1..4),
        proptest::collection::vec(any::<bool>(), 3),
        any::<Option<(Index, u64, u64, bool)>>(),
        well_formed(),
        proptest::collection::vec(edit(), 0..3),
        origin_count(),
    )
        .prop_map(|(allowed, slashes, derived, fresh, edits, count)| {
            let origin = match derived {
                // A listed origin, re-cased, its default port written or not.
                Some((which, scheme_case, host_case, explicit)) => {
                    let entry = &allowed[which.index(allowed.len())];
                    let scheme = entry.scheme.to_ascii_lowercase();
                    let default = default_port(&scheme);
                    let port = match entry.port {
                        Some(port) if Some(port) != default => Some(port),
                        _ if explicit => default,
                        _ => None,
                    };
                    WellFormed {
                        scheme: recase(&scheme, scheme_case),
                        host: recase(&entry.host.to_ascii_lowercase(), host_case),
                        port,
                    }
                }
                None => fresh,
            };
            (allowed, slashes, origin.render(), edits, count)
        })
}

/// A `Host` header, its host lower-cased and its port, an origin, edits to
/// it, and how many times it is sent.
type SameOriginCase = (String, String, Option<u16>, String, Vec<Edit>, usize);

fn same_origin_case() -> impl Strategy<Value = SameOriginCase> {
    (
        pick(HOSTS),
        any::<u64>(),
        pick(&[None, Some(80u16), Some(443), Some(3000), Some(8443)]),
        proptest::option::weighted(0.7, (pick(SCHEMES), any::<u64>(), any::<u64>(), 0u8..4)),
        well_formed(),
        proptest::collection::vec(edit(), 0..3),
        origin_count(),
    )
        .prop_map(
            |(host, host_case, host_port, derived, fresh, edits, count)| {
                let host_header = match host_port {
                    Some(port) => format!("{}:{port}", recase(host, host_case)),
                    None => recase(host, host_case),
                };
                let origin = match derived {
                    // The request's own host, under some scheme and port.
                    Some((scheme, scheme_case, origin_case, port)) => WellFormed {
                        scheme: recase(scheme, scheme_case),
                        host: recase(host, origin_case),
                        port: match port {
                            0 => None,
                            1 => host_port.or(default_port(scheme)),
                            2 => default_port(scheme),
                            _ => Some(8080),
                        },
                    },
                    None => fresh,
                }
                .render();
                (
                    host_header,
                    host.to_owned(),
                    host_port,
                    origin,
                    edits,
                    count,
                )
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn allowlist_accepts_exactly_the_listed_origins(
        (allowed, slashes, origin, edits, count) in allowlist_case()
    ) {
        let config: Vec<String> = allowed
            .iter()
            .zip(slashes.iter().cycle())
            .map(|(entry, slash)| format!("{}{}", entry.render(), if *slash { "/" } else { "" }))
            .collect();
        let policy = match OriginPolicy::allow(&config) {
            Ok(policy) => policy,
            Err(e) => return Err(TestCaseError::fail(format!("{config:?} refused: {e}"))),
        };

        let sent = apply(&origin, &edits);
        let spellings: Vec<String> = allowed.iter().flat_map(WellFormed::spellings).collect();
        let listed = std::str::from_utf8(&sent)
            .is_ok_and(|text| spellings.contains(&text.to_ascii_lowercase()));
        let expected = match count {
            0 => true,
            1 => listed,
            _ => false,
        };
        let result = policy.check(&origin_parts(&sent, count, Some("app.example.com")));
        prop_assert_eq!(
            result.is_ok(),
            expected,
            "origin {:?} against {:?}: {:?}",
            String::from_utf8_lossy(&sent),
            config,
            result
        );
    }

    #[test]
    fn same_origin_accepts_exactly_the_host(
        (host_header, host, host_port, origin, edits, count) in same_origin_case()
    ) {
        let sent = apply(&origin, &edits);
        let same = std::str::from_utf8(&sent)
            .is_ok_and(|text| same_origin_reference(&text.to_ascii_lowercase(), &host, host_port));
        let expected = match count {
            0 => true,
            1 => same,
            _ => false,
        };
        let result = OriginPolicy::same_origin()
            .check(&origin_parts(&sent, count, Some(&host_header)));
        prop_assert_eq!(
            result.is_ok(),
            expected,
            "origin {:?} for host {:?}: {:?}",
            String::from_utf8_lossy(&sent),
            host_header,
            result
        );
    }
}

// ---------------------------------------------------------------------------
// Redactor
// ---------------------------------------------------------------------------

/// `ticket` in any case, letters optionally percent-encoded, with optional
/// `+` or `%20` around it: every spelling a lenient log reader takes for it.
fn ticket_spelling() -> impl Strategy<Value = String> {
    let lenient = (
        pick(&["", "", "", "+", "%20", "+%20"]),
        proptest::collection::vec(0u8..6, 6),
        pick(&["", "", "", "+", "%20"]),
    )
        .prop_map(|(before, styles, after)| {
            let name: String = "ticket"
                .bytes()
                .zip(styles)
                .map(|(b, style)| match style {
                    0 | 1 => char::from(b).to_string(),
                    2 => char::from(b.to_ascii_uppercase()).to_string(),
                    3 => format!("%{b:02x}"),
                    4 => format!("%{b:02X}"),
                    _ => format!("%{:02x}", b.to_ascii_uppercase()),
                })
                .collect();
            format!("{before}{name}{after}")
        });
    prop_oneof![1 => Just("ticket".to_owned()), 4 => lenient]
}

#[derive(Clone, Debug)]
enum Param {
    Secret { text: String, secret: String },
    Other(String),
}

fn param() -> impl Strategy<Value = Param> {
    let other_name = prop_oneof![
        3 => "[a-z0-9_]{1,8}".prop_filter("not the ticket", |n| !n.eq_ignore_ascii_case("ticket")),
        1 => pick(&["tickets", "ticke", "xticket", "ticket_id", "amp", "t%69ckets", "room"])
            .prop_map(String::from),
    ];
    // Chunks of at most 8 characters between dots: no run as long as a secret.
    let other_value = proptest::collection::vec("([a-z0-9~]|%[0-9A-F]{2}){0,8}", 0..4)
        .prop_map(|chunks| chunks.join("."));
    prop_oneof![
        2 => (ticket_spelling(), pick(&["=", "=", "%3D", "%3d"]), "[A-Za-z0-9_-]{12,40}")
            .prop_map(|(name, eq, secret)| Param::Secret { text: format!("{name}{eq}{secret}"), secret }),
        3 => (other_name, proptest::option::weighted(0.9, other_value)).prop_map(
            |(name, value)| Param::Other(match value {
                Some(value) => format!("{name}={value}"),
                None => name,
            })
        ),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn redactor_hides_every_spelling_of_the_ticket(
        path in pick(&["/ws", "/", "/a/b"]),
        lead in pick(&["", "", "&", ";", "amp;"]),
        params in proptest::collection::vec(param(), 1..7),
        separators in proptest::collection::vec(pick(&["&", "&", ";", "&amp;", "&AMP;", "&amp%3B"]), 6),
    ) {
        let mut query = lead.to_owned();
        for (i, param) in params.iter().enumerate() {
            if i > 0 {
                query.push_str(separators[i % separators.len()]);
            }
            query.push_str(match param {
                Param::Secret { text, .. } | Param::Other(text) => text,
            });
        }
        let secrets: Vec<&str> = params
            .iter()
            .filter_map(|p| match p {
                Param::Secret { secret, .. } => Some(secret.as_str()),
                Param::Other(_) => None,
            })
            .collect();
        let uri: http::Uri = format!("{path}?{query}").parse().map_err(|e| {
            TestCaseError::fail(format!("generated an invalid URI: {e}"))
        })?;
        let shown = Redactor::for_params(["ticket"]).uri(&uri).to_string();

        for secret in &secrets {
            prop_assert!(!shown.contains(secret), "{} shown as {}", uri, shown);
        }
        let rest = shown.strip_prefix(&format!("{path}?"));
        prop_assert!(rest.is_some(), "{} shown as {}", uri, shown);
        let rest = rest.unwrap_or_default();
        let split = |text: &str| -> Vec<(String, Option<char>)> {
            let mut pieces = Vec::new();
            let mut piece = String::new();
            for c in text.chars() {
                if c == '&' || c == ';' {
                    pieces.push((std::mem::take(&mut piece), Some(c)));
                } else {
                    piece.push(c);
                }
            }
            pieces.push((piece, None));
            pieces
        };
        let sent = split(&query);
        let rendered = split(rest);
        prop_assert_eq!(sent.len(), rendered.len(), "{} shown as {}", uri, shown);
        for ((sent, sent_sep), (rendered, rendered_sep)) in sent.iter().zip(&rendered) {
            prop_assert_eq!(sent_sep, rendered_sep, "{} shown as {}", uri, shown);
            if !secrets.iter().any(|s| sent.contains(s)) {
                prop_assert_eq!(sent, rendered, "{} shown as {}", uri, shown);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// First-message protocols
// ---------------------------------------------------------------------------

const GAPS: &[&str] = &["", "", "", " ", "\n", "\t", "\r\n  "];

/// Whitespace between tokens, cycled through.
#[derive(Clone, Debug)]
struct Gaps(Vec<&'static str>);

impl Gaps {
    fn at(&self, i: usize) -> &'static str {
        self.0.get(i % self.0.len().max(1)).copied().unwrap_or("")
    }
}

fn gaps() -> impl Strategy<Value = Gaps> {
    proptest::collection::vec(pick(GAPS), 1..6).prop_map(Gaps)
}

fn push_unicode_escape(out: &mut String, c: char, upper: bool) {
    let mut units = [0u16; 2];
    for unit in c.encode_utf16(&mut units) {
        if upper {
            write!(out, "\\u{unit:04X}").expect("writing to a String");
        } else {
            write!(out, "\\u{unit:04x}").expect("writing to a String");
        }
    }
}

fn short_escape(c: char) -> Option<&'static str> {
    Some(match c {
        '"' => "\\\"",
        '\\' => "\\\\",
        '/' => "\\/",
        '\n' => "\\n",
        '\t' => "\\t",
        '\r' => "\\r",
        '\u{8}' => "\\b",
        '\u{c}' => "\\f",
        _ => return None,
    })
}

/// `text` as a JSON string literal, each character written plainly or as a
/// `\u` escape (either hex case) or a short escape, as `styles` says.
fn json_string(text: &str, styles: &[u8]) -> String {
    let mut out = String::from("\"");
    for (i, c) in text.chars().enumerate() {
        let style = styles.get(i % styles.len().max(1)).copied().unwrap_or(0) % 8;
        let must_escape = c == '"' || c == '\\' || c < ' ';
        match (style, short_escape(c)) {
            (4 | 5, _) => push_unicode_escape(&mut out, c, style == 5),
            (6, Some(short)) => out.push_str(short),
            _ if must_escape => push_unicode_escape(&mut out, c, false),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

fn styles() -> impl Strategy<Value = Vec<u8>> + Clone {
    proptest::collection::vec(any::<u8>(), 0..8)
}

fn string_literal(words: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    (pick(words), styles()).prop_map(|(word, styles)| json_string(word, &styles))
}

fn render_object(members: &[(String, String)], gaps: &Gaps) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(gaps.at(4 * i));
        out.push_str(key);
        out.push_str(gaps.at(4 * i + 1));
        out.push(':');
        out.push_str(gaps.at(4 * i + 2));
        out.push_str(value);
        out.push_str(gaps.at(4 * i + 3));
    }
    out.push('}');
    out
}

/// Any JSON value, a few levels deep, including numbers and escapes that
/// only some parsers represent (`1e400`, lone surrogates).
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        16 => pick(&[
            "null", "true", "false", "0", "-0", "1.5e-10", "12345678901234567890123", "0.0",
            r#""\ud83d\ude00""#,
        ])
        .prop_map(String::from),
        12 => ("\\PC{0,8}", styles()).prop_map(|(text, styles)| json_string(&text, &styles)),
        4 => string_literal(&["auth", "connection_init", "a\u{0}b", "\n", "Bearer x"]),
        1 => pick(&["1e400", "-1e999", r#""\ud800""#, r#""\udc00x""#]).prop_map(String::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            (proptest::collection::vec(inner.clone(), 0..4), gaps()).prop_map(|(items, gaps)| {
                let mut out = String::from("[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(gaps.at(i));
                    out.push_str(item);
                }
                out.push(']');
                out
            }),
            (
                proptest::collection::vec((member_key(), inner), 0..4),
                gaps()
            )
                .prop_map(|(members, gaps)| render_object(&members, &gaps)),
        ]
    })
}

fn member_key() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => string_literal(&["token", "payload", "id", "x", "type", "headers", "Authorization"]),
        1 => ("[a-z]{0,5}", styles()).prop_map(|(key, styles)| json_string(&key, &styles)),
    ]
}

/// The `type` member: spelled with escapes, near misses, values of other
/// kinds.
fn type_member() -> impl Strategy<Value = (String, String)> {
    let key = prop_oneof![
        3 => string_literal(&["type"]),
        2 => string_literal(&["Type", "TYPE", "typ", "types", "type ", "typе"]),
    ];
    let value = prop_oneof![
        3 => string_literal(&["auth", "connection_init"]),
        3 => string_literal(&[
            "Auth", "AUTH", "auth ", "authx", "ping", "pong", "subscribe", "", "auth\u{0}",
            "Connection_init", "connection_init ",
        ]),
        1 => pick(&["null", "5", "[\"auth\"]", "{\"type\":\"auth\"}", r#""\ud800""#])
            .prop_map(String::from),
    ];
    (key, value)
}

/// The member each preset reads besides `type`: `token` or `payload`.
fn field_member() -> impl Strategy<Value = (String, String)> {
    let value = prop_oneof![
        6 => string_literal(&["t0ken", "Bearer t0ken", ""]),
        6 => pick(&[
            "null", "7", "[]", r#"{"token":"t"}"#, r#"{"headers":{"Authorization":"Bearer h"}}"#,
        ])
        .prop_map(String::from),
        1 => pick(&["1e400", r#""\ud800""#, r#"{"token":1e400}"#]).prop_map(String::from),
        2 => json_value(),
    ];
    (
        string_literal(&["token", "payload", "token", "payload", "Token"]),
        value,
    )
}

#[derive(Clone, Debug)]
enum Shape {
    Plain(&'static str, &'static str),
    Garbage(&'static str),
    Truncated(Index),
    InArray,
    ByteOrderMark,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        8 => (pick(GAPS), pick(GAPS)).prop_map(|(lead, trail)| Shape::Plain(lead, trail)),
        1 => pick(&["x", "}", ",{}", "\u{0}", "{}", " 1"]).prop_map(Shape::Garbage),
        1 => any::<Index>().prop_map(Shape::Truncated),
        1 => Just(Shape::InArray),
        1 => Just(Shape::ByteOrderMark),
    ]
}

/// A message object: the `type` and field members among others, in any
/// order, sometimes repeated, then shaped.
fn message_object() -> impl Strategy<Value = String> {
    (
        proptest::option::weighted(0.85, type_member()),
        proptest::option::weighted(0.7, field_member()),
        proptest::collection::vec((member_key(), json_value()), 0..3),
        0u8..16,
        gaps(),
        shape(),
    )
        .prop_flat_map(|(kind, field, others, repeat, gaps, shape)| {
            let mut members = others;
            if let Some(kind) = kind {
                if repeat == 0 {
                    members.push(kind.clone());
                }
                members.push(kind);
            }
            if let Some(field) = field {
                if repeat == 1 {
                    members.push(field.clone());
                }
                members.push(field);
            }
            (Just(members).prop_shuffle(), Just(gaps), Just(shape))
        })
        .prop_map(|(members, gaps, shape)| {
            let object = render_object(&members, &gaps);
            match shape {
                Shape::Plain(lead, trail) => format!("{lead}{object}{trail}"),
                Shape::Garbage(tail) => format!("{object}{tail}"),
                Shape::Truncated(at) => {
                    let at = at.index(object.chars().count());
                    object.chars().take(at).collect()
                }
                Shape::InArray => format!("[{object}]"),
                Shape::ByteOrderMark => format!("\u{feff}{object}"),
            }
        })
}

fn message_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => message_object(),
        1 => any::<String>(),
        1 => "[{}\\[\\]\":,\\\\ tyepauhconi_0-9]{0,40}",
        1 => json_value(),
        1 => (100usize..160, pick(&["auth", "connection_init"])).prop_map(|(depth, kind)| {
            format!(r#"{{"type":"{kind}","x":{}{}}}"#, "[".repeat(depth), "]".repeat(depth))
        }),
    ]
}

/// Whether `text` is an auth message of a preset whose auth type is `kind`
/// and whose other member is `field`: a JSON object whose `type` is the
/// string `kind`.
///
/// A repeated `type` counts by its last value, as in a `serde_json::Value`
/// (and `JSON.parse`). `None` (either answer) for an object that is valid
/// JSON but beyond what a `Value` holds — nesting past 128 levels, a number
/// past `f64`, a lone surrogate escape — where parsers may differ (RFC 8259
/// §8.2, §9).
fn reference_is_auth(text: &str, kind: &str, field: &str) -> Option<bool> {
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object,
        Err(_)
            if text
                .trim_start_matches([' ', '\t', '\n', '\r'])
                .starts_with('{')
                && serde_json::from_str::<IgnoredAny>(text).is_ok() =>
        {
            return None;
        }
        _ => return Some(false),
    };
    // Repeated members: the last one counts, in the reader as in `Value`.
    let _ = field;
    Some(object.get("type") == Some(&Value::String(kind.to_owned())))
}

fn check_reader(
    protocol: &impl AuthProtocol,
    text: &str,
    kind: &str,
    field: &str,
) -> Result<(), TestCaseError> {
    let incoming = protocol.read(text);
    if !protocol.may_be_auth(text) {
        prop_assert!(
            !incoming.is_auth(),
            "the quick check skips an auth message: {:?}",
            text
        );
    }
    if let Some(expected) = reference_is_auth(text, kind, field) {
        prop_assert_eq!(
            incoming.is_auth(),
            expected,
            "{:?} read as {:?}",
            text,
            incoming
        );
    }
    Ok(())
}

/// A message of a test socket.
#[derive(Debug, PartialEq)]
enum Msg {
    Text(String),
    Close(u16),
}

impl WsMessage for Msg {
    fn kind(&self) -> MessageKind<'_> {
        match self {
            Msg::Text(text) => MessageKind::Text(text),
            Msg::Close(_) => MessageKind::Close,
        }
    }

    fn text(text: String) -> Self {
        Msg::Text(text)
    }

    fn close(code: u16, _reason: &'static str) -> Self {
        Msg::Close(code)
    }
}

/// Delivers its messages, then ends; accepts everything sent to it.
struct Socket(VecDeque<Msg>);

impl Stream for Socket {
    type Item = Result<Msg, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

impl Sink<Msg> for Socket {
    type Error = Infallible;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, _: Msg) -> Result<(), Infallible> {
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
}

fn accept(_: Credential) -> Ready<Result<Verified<String>, AuthError>> {
    ready(Ok(Verified::new("alice".to_owned())))
}

/// Whether a `LifetimeGuard` hands `text`, sent on an authenticated socket,
/// to the application.
fn guard_passes_on<P: AuthProtocol>(protocol: P, text: &str) -> bool {
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let socket = Socket(VecDeque::from([Msg::Text(text.to_owned())]));
            let mut guard: LifetimeGuard<_, Msg, _, _> =
                LifetimeGuard::new(socket, &"alice".to_owned(), None, accept, protocol);
            let mut delivered = Vec::new();
            while let Some(Ok(message)) = guard.next().await {
                delivered.push(message);
            }
            delivered == [Msg::Text(text.to_owned())]
        })
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn json_preset_reads_exactly_objects_of_type_auth(text in message_text()) {
        check_reader(&JsonAuth, &text, "auth", "token")?;
    }

    #[test]
    fn graphql_preset_reads_exactly_connection_init(text in message_text()) {
        check_reader(&GraphqlTransportWs::new(), &text, "connection_init", "payload")?;
    }

    #[test]
    fn the_guard_intercepts_exactly_what_read_calls_auth(text in message_text()) {
        let intercepted = !guard_passes_on(JsonAuth, &text);
        prop_assert_eq!(intercepted, JsonAuth.read(&text).is_auth(), "{:?}", text);
        let graphql = GraphqlTransportWs::new();
        let intercepted = !guard_passes_on(graphql.clone(), &text);
        prop_assert_eq!(intercepted, graphql.read(&text).is_auth(), "{:?}", text);
    }
}
