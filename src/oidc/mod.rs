//! Tokens from an OpenID provider: discovery, a JWKS key cache that follows
//! the provider's key rotation, and several issuers in one verifier.
//!
//! [`OidcVerifier`] verifies the JWTs an identity provider (Keycloak, Auth0,
//! Entra ID, Cognito, Google, any OpenID provider) signs with the keys it
//! publishes at its JWKS URL. It is a [`Verifier`](crate::Verifier) like
//! [`JwtVerifier`](crate::jwt::JwtVerifier), with the same claim checks
//! (explicit algorithm allowlist, `exp` required, `nbf`, 5 s leeway, `crit`
//! refused, `expires_at` = `exp` + leeway), the provider's issuer required in
//! `iss`, and an audience required in `aud`. The identity is your own claims
//! type ([`JwtClaims`](crate::jwt::JwtClaims)).
//!
//! | built from | how the keys are found |
//! |---|---|
//! | [`discover(issuer)`](OidcVerifierBuilder::discover) | `{issuer}/.well-known/openid-configuration` → `jwks_uri`; the document's `issuer` must equal the configured one exactly ([OpenID Discovery §4.3]) |
//! | [`jwks_url(issuer, url)`](OidcVerifierBuilder::jwks_url) | that URL |
//! | [`jwks(issuer, document)`](OidcVerifierBuilder::jwks) / [`jwks_file`](OidcVerifierBuilder::jwks_file) | a fixed key set, never fetched (offline use, tests) |
//!
//! # Choosing the key
//!
//! The token's `kid` names the key. A key is used only for signatures
//! (`use` absent or `sig`, `key_ops` absent or with `verify`), only with an
//! algorithm of its own family and curve that is in the allowlist, and only
//! with its own `alg` when the key names one. Symmetric (`oct`) keys are never
//! used. A token without `kid` is verified only when exactly one key fits its
//! algorithm. Nothing is ever fetched from a URL a token names (`jku`, `x5u`).
//! Access tokens in the [RFC 9068] form (`typ: at+jwt`) verify;
//! [`access_tokens_only`](OidcVerifierBuilder::access_tokens_only) refuses
//! every other kind (an ID token, for one).
//!
//! # The key cache
//!
//! - Reading the current key set takes no lock: a token whose key is cached is
//!   decided at once ([`Verification::Ready`](crate::Verification::Ready)), as
//!   with `JwtVerifier`.
//! - A background task refreshes the key set when the provider's
//!   `Cache-Control: max-age` runs out, clamped to [`DEFAULT_MIN_REFRESH`] ..
//!   [`DEFAULT_MAX_REFRESH`] ([`DEFAULT_REFRESH`] without one).
//! - A token naming an unknown `kid` (the provider rotated its keys) triggers one
//!   refresh, shared by every token waiting for it, and at most one per
//!   [`DEFAULT_UNKNOWN_KEY_REFRESH`]: a flood of tokens with made-up `kid`s
//!   cannot turn into a flood of fetches. Tokens arriving in between are refused
//!   at once.
//! - Every fetch has a timeout ([`DEFAULT_FETCH_TIMEOUT`]) and a size cap
//!   ([`DEFAULT_MAX_RESPONSE_SIZE`]); redirects are not followed. A key set
//!   without a single key this verifier may use counts as a failed fetch: the
//!   keys already cached stay.
//! - The background tasks end when the last clone of the verifier is dropped.
//!
//! # When the provider is down
//!
//! Keys already fetched keep working for [`DEFAULT_MAX_STALE`] after the last
//! successful fetch, while the task retries (1 s, doubling, at most 30 s apart).
//! A verifier that has no usable keys (never fetched, or stale past that bound)
//! answers [`Unavailable`](crate::AuthErrorKind::Unavailable): the upgrade is
//! refused with 503, failing closed, and succeeds again by itself once the
//! provider answers, with no restart. A token naming an unknown key while the
//! provider cannot be reached is refused with 503 too: it may be signed with a
//! key this verifier has not been able to fetch.
//!
//! # Several issuers
//!
//! Each issuer added to the builder has its own keys. A verifier with several
//! reads the token's `iss` first and uses only that issuer's keys; a token from
//! an issuer that is not configured is refused without any fetch.
//!
//! # Security
//!
//! - Provider URLs must be `https`, except on loopback addresses (a provider on
//!   the same host); [`allow_http`](OidcVerifierBuilder::allow_http) lifts
//!   this, for a provider reached over a private network you trust.
//! - TLS is rustls with Mozilla's root certificates (`webpki-roots`), so the
//!   verifier works the same in a container without a system CA bundle.
//!
//! # Example
//!
//! With a fixed key set (with a provider, [`OidcVerifier::discover`] is all
//! that changes):
//!
//! ```
//! use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
//! use tower_ws_auth::jwt::{now_secs, BasicClaims};
//! use tower_ws_auth::oidc::OidcVerifier;
//! use tower_ws_auth::AuthErrorKind;
//!
//! const JWKS: &str = r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "2024-1", "use": "sig", "alg": "ES256",
//!     "x": "i6UlN3CWYp8OkYI3cIjzsdWcO2gihmpucvGNza3Ql4w", "y": "fJ16DG_HFzh_ffzNch5SX9tOQWSVL6WxFEqr4i2WVgg"}]}"#;
//! const PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY-----
//! MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgDjmaoIIZYxu/fZrV
//! CRcvX8K2ES0+Nrjruluyuj+filmhRANCAASLpSU3cJZinw6RgjdwiPOx1Zw7aCKG
//! am5y8Y3NrdCXjHydegxvxxc4f338zXIeUl/bTkFklS+lsRRKq+ItllYI
//! -----END PRIVATE KEY-----";
//!
//! let verifier = OidcVerifier::<BasicClaims>::builder()
//!     .jwks("https://id.example", JWKS)
//!     .audience(&["chat-api"])
//!     .build()
//!     .unwrap();
//!
//! let sign = |kid: &str, claims: serde_json::Value| {
//!     let mut header = Header::new(Algorithm::ES256);
//!     header.kid = Some(kid.into());
//!     encode(&header, &claims, &EncodingKey::from_ec_pem(PRIVATE_KEY.as_bytes()).unwrap()).unwrap()
//! };
//! let claims = serde_json::json!({
//!     "iss": "https://id.example", "aud": "chat-api", "sub": "alice", "exp": now_secs() + 60,
//! });
//!
//! let token = sign("2024-1", claims.clone());
//! assert_eq!(verifier.verify_token(&token).unwrap().identity.sub, "alice");
//!
//! // Another audience's token, signed by the same provider:
//! let mut other = claims.clone();
//! other["aud"] = "billing-api".into();
//! assert_eq!(verifier.verify_token(&sign("2024-1", other)).unwrap_err().kind(), AuthErrorKind::Invalid);
//!
//! // A key the set does not hold (a fixed set is never fetched again):
//! assert_eq!(verifier.verify_token(&sign("2023-9", claims)).unwrap_err().kind(), AuthErrorKind::Invalid);
//! ```
//!
//! [OpenID Discovery §4.3]: https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfigurationValidation
//! [RFC 9068]: https://www.rfc-editor.org/rfc/rfc9068

mod cache;
mod discovery;
mod http;
mod jwks;
mod verifier;

use std::time::Duration;

pub use self::verifier::{OidcVerifier, OidcVerifierBuilder, VerifyFuture};

/// Timeout for one fetch (connection, TLS, response and body).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest discovery document or key set accepted: 256 KiB. Real key sets are
/// a few KiB.
pub const DEFAULT_MAX_RESPONSE_SIZE: usize = 256 * 1024;

/// Refresh interval when the provider sends no `Cache-Control: max-age`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5 * 60);

/// The provider's `max-age` is raised to at least this (`no-cache` and
/// `no-store` count as 0).
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(30);

/// The provider's `max-age` is lowered to at most this, so that a key the
/// provider removed stops working within an hour.
pub const DEFAULT_MAX_REFRESH: Duration = Duration::from_secs(60 * 60);

/// At most one refresh per this interval is triggered by tokens naming a key
/// that is not in the cache.
pub const DEFAULT_UNKNOWN_KEY_REFRESH: Duration = Duration::from_secs(30);

/// How long keys keep working after the last successful fetch while the
/// provider cannot be reached.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 60 * 60);
