//! Fetching a provider's documents: HTTPS with rustls (ring) and Mozilla's
//! roots, a timeout on every fetch, a cap on the body, no redirects.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, USER_AGENT};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::ConfigError;

/// A fetched document and how long the provider lets it be cached.
pub(crate) struct Fetched {
    pub(crate) body: Bytes,
    pub(crate) max_age: Option<Duration>,
}

/// Why a fetch failed. Names the URL (a provider's, never a token's) and the
/// reason.
#[derive(Debug)]
pub(crate) struct FetchError {
    url: String,
    reason: Reason,
}

#[derive(Debug)]
enum Reason {
    Timeout(Duration),
    Request(hyper_util::client::legacy::Error),
    Status(StatusCode),
    Body,
    TooLarge(usize),
    Document(&'static str),
}

impl FetchError {
    pub(crate) fn document(url: &Uri, what: &'static str) -> Self {
        Self {
            url: url.to_string(),
            reason: Reason::Document(what),
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.url)?;
        match &self.reason {
            Reason::Timeout(after) => write!(f, "no complete answer within {after:?}"),
            Reason::Request(error) => write!(f, "request failed: {error}"),
            Reason::Status(status) => write!(f, "answered {status}"),
            Reason::Body => f.write_str("the body could not be read"),
            Reason::TooLarge(cap) => write!(f, "the body exceeds {cap} bytes"),
            Reason::Document(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.reason {
            Reason::Request(error) => Some(error),
            _ => None,
        }
    }
}

/// One HTTP(S) client shared by a verifier's issuers.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
    max_size: usize,
}

impl HttpClient {
    pub(crate) fn new(timeout: Duration, max_size: usize) -> Result<Self, ConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| ConfigError::new(format!("TLS configuration: {e}")))?
            // Plain `http` is refused earlier, when the URL is configured or
            // discovered, unless it is on loopback or explicitly allowed.
            .https_or_http()
            .enable_http1()
            .build();
        // Fetches are minutes apart: a fresh connection each time, and no idle
        // connection outliving the verifier.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Ok(Self {
            client,
            timeout,
            max_size,
        })
    }

    /// `GET url`: the body of a 200 answer, within the timeout and the size cap.
    pub(crate) async fn get(&self, url: &Uri) -> Result<Fetched, FetchError> {
        let fail = |reason| FetchError {
            url: url.to_string(),
            reason,
        };
        match tokio::time::timeout(self.timeout, self.fetch(url)).await {
            Ok(Ok(fetched)) => Ok(fetched),
            Ok(Err(reason)) => Err(fail(reason)),
            Err(_) => Err(fail(Reason::Timeout(self.timeout))),
        }
    }

    async fn fetch(&self, url: &Uri) -> Result<Fetched, Reason> {
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = url.clone();
        let headers = request.headers_mut();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("tower-ws-auth/", env!("CARGO_PKG_VERSION"))),
        );
        let response = self
            .client
            .request(request)
            .await
            .map_err(Reason::Request)?;
        // Redirects are not followed: a provider publishes its documents at
        // the URLs it names.
        if response.status() != StatusCode::OK {
            return Err(Reason::Status(response.status()));
        }
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_size as u64) {
            return Err(Reason::TooLarge(self.max_size));
        }
        let max_age = max_age(response.headers().get_all(CACHE_CONTROL).iter());
        let body = Limited::new(response.into_body(), self.max_size)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    Reason::TooLarge(self.max_size)
                } else {
                    Reason::Body
                }
            })?
            .to_bytes();
        Ok(Fetched { body, max_age })
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .field("max_size", &self.max_size)
            .finish()
    }
}

/// The freshness a `Cache-Control` header grants ([RFC 9111 §5.2.2]):
/// `max-age`, or zero for `no-cache` / `no-store`.
///
/// [RFC 9111 §5.2.2]: https://www.rfc-editor.org/rfc/rfc9111#section-5.2.2
pub(crate) fn max_age<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Option<Duration> {
    let mut found = None;
    for value in values {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, argument) = match directive.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (directive, None),
            };
            if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age") {
                if let Some(secs) = argument.and_then(|a| a.parse::<u64>().ok()) {
                    found = Some(Duration::from_secs(secs));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&'static str]) -> Option<Duration> {
        let values: Vec<HeaderValue> = values.iter().map(|v| HeaderValue::from_static(v)).collect();
        max_age(values.iter())
    }

    #[test]
    fn cache_control() {
        assert_eq!(
            parse(&["public, max-age=300"]),
            Some(Duration::from_secs(300))
        );
        assert_eq!(parse(&["Max-Age=\"60\""]), Some(Duration::from_secs(60)));
        assert_eq!(
            parse(&["public", "max-age=7, must-revalidate"]),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse(&["max-age=300, no-cache"]), Some(Duration::ZERO));
        assert_eq!(parse(&["no-store"]), Some(Duration::ZERO));
        assert_eq!(parse(&["public"]), None);
        assert_eq!(parse(&["max-age=-1"]), None);
        assert_eq!(parse(&["max-age=99999999999999999999999"]), None);
        assert_eq!(parse(&[]), None);
    }
}
