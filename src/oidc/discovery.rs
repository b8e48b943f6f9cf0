//! OpenID Provider discovery ([OpenID Discovery §4]) and which provider URLs
//! are acceptable.
//!
//! [OpenID Discovery §4]: https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfig

use std::net::IpAddr;

use http::Uri;
use serde::Deserialize;

use super::http::{FetchError, HttpClient};

/// Parse a provider URL: absolute, `https` (or `http` on loopback, or when
/// `allow_http`), with a host.
pub(crate) fn provider_url(url: &str, allow_http: bool) -> Result<Uri, &'static str> {
    let uri: Uri = url.parse().map_err(|_| "not a URL")?;
    let host = uri.host().ok_or("not an absolute URL with a host")?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if allow_http || is_loopback(host) => Ok(uri),
        Some("http") => Err("plain http outside loopback; use https, or allow_http"),
        _ => Err("not an http(s) URL"),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Check that `issuer` can be an issuer identifier: a provider URL without
/// query or fragment ([OpenID Discovery §2]).
///
/// [OpenID Discovery §2]: https://openid.net/specs/openid-connect-discovery-1_0.html#IssuerDiscovery
pub(crate) fn issuer_url(issuer: &str, allow_http: bool) -> Result<Uri, &'static str> {
    if issuer.contains(['?', '#']) {
        return Err("an issuer has no query or fragment");
    }
    provider_url(issuer, allow_http)
}

/// `{issuer}/.well-known/openid-configuration`, a terminating `/` of the
/// issuer removed first (§4).
pub(crate) fn configuration_url(issuer: &str, allow_http: bool) -> Result<Uri, &'static str> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    provider_url(&url, allow_http)
}

#[derive(Deserialize)]
struct Configuration {
    issuer: String,
    jwks_uri: String,
}

/// Fetch the provider's configuration and return its `jwks_uri`, after
/// checking that the document names exactly `issuer` (§4.3: otherwise a
/// provider could speak for another).
pub(crate) async fn discover(
    client: &HttpClient,
    issuer: &str,
    url: &Uri,
    allow_http: bool,
) -> Result<Uri, FetchError> {
    let fetched = client.get(url).await?;
    let configuration: Configuration = serde_json::from_slice(&fetched.body).map_err(|_| {
        FetchError::document(url, "not a provider configuration (`issuer`, `jwks_uri`)")
    })?;
    if configuration.issuer != issuer {
        return Err(FetchError::document(
            url,
            "the configuration names another issuer than the one configured",
        ));
    }
    provider_url(&configuration.jwks_uri, allow_http).map_err(|why| FetchError::document(url, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_urls() {
        assert!(provider_url("https://id.example/realms/app", false).is_ok());
        assert!(provider_url("http://127.0.0.1:8080", false).is_ok());
        assert!(provider_url("http://127.9.9.9", false).is_ok());
        assert!(provider_url("http://[::1]:9000/", false).is_ok());
        assert!(provider_url("http://localhost:9000/", false).is_ok());
        assert!(provider_url("http://keycloak:8080/realms/app", false).is_err());
        assert!(provider_url("http://keycloak:8080/realms/app", true).is_ok());
        assert!(provider_url("ftp://id.example", true).is_err());
        assert!(provider_url("/relative", true).is_err());
        assert!(provider_url("not a url", true).is_err());
        assert!(issuer_url("https://id.example?x=1", false).is_err());
        assert!(issuer_url("https://id.example#f", false).is_err());
    }

    #[test]
    fn configuration_urls() {
        for issuer in [
            "https://id.example/realms/app",
            "https://id.example/realms/app/",
        ] {
            assert_eq!(
                configuration_url(issuer, false).unwrap(),
                "https://id.example/realms/app/.well-known/openid-configuration"
            );
        }
        assert_eq!(
            configuration_url("https://id.example", false).unwrap(),
            "https://id.example/.well-known/openid-configuration"
        );
    }
}
