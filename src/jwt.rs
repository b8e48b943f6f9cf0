//! JWT verification with [`jsonwebtoken`].
//!
//! [`JwtVerifier`] checks the signature against one key and an explicit
//! algorithm allowlist, then the registered claims ([RFC 8725] §3):
//!
//! | check | default |
//! |---|---|
//! | algorithm | must be in the allowlist; every listed algorithm must belong to the key's family, so HS/RS confusion cannot be configured; `alg: none` never verifies |
//! | `exp` | required and checked |
//! | `nbf` | checked when present |
//! | leeway for `exp`/`nbf` | 5 s ([`DEFAULT_LEEWAY`]), not jsonwebtoken's 60 s: tokens here are short-lived and server clocks are synchronised; the verified `expires_at` is `exp` + leeway, so a socket accepted within the leeway is not closed at once |
//! | `crit` header | refused ([RFC 7515 §4.1.11]): this verifier understands no extension |
//! | `aud` | with [`audience`](JwtVerifier::audience): required and must match; without it a token that carries `aud` is refused (it was meant for someone else) |
//! | `iss` | with [`issuer`](JwtVerifier::issuer): required and must match |
//!
//! jsonwebtoken needs a crypto backend: this crate's `rust-crypto` feature (the
//! default, pure Rust) or `aws-lc-rs`. With both, `aws-lc-rs` is used.
//!
//! ```
//! use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
//! use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
//! use tower_ws_auth::AuthErrorKind;
//!
//! let secret = b"a secret of at least thirty-two bytes!";
//! let verifier = JwtVerifier::<BasicClaims>::hs256(secret).unwrap();
//!
//! let exp = jsonwebtoken::get_current_timestamp() + 60;
//! let claims = BasicClaims { sub: "alice".into(), exp };
//! let token = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)).unwrap();
//! assert_eq!(verifier.verify_token(&token).unwrap().identity.sub, "alice");
//!
//! let forged = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"another secret of thirty-two bytes!!")).unwrap();
//! assert_eq!(verifier.verify_token(&forged).unwrap_err().kind(), AuthErrorKind::Invalid);
//! ```
//!
//! [RFC 8725]: https://www.rfc-editor.org/rfc/rfc8725
//! [RFC 7515 §4.1.11]: https://www.rfc-editor.org/rfc/rfc7515#section-4.1.11

use std::fmt;
use std::future::{ready, Ready};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use jsonwebtoken;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::credential::Credential;
use crate::error::{AuthError, AuthErrorKind, ConfigError};
use crate::revocation::Revocable;
use crate::verify::{Subject, Verification, Verified, Verifier};

/// Default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// Minimum HMAC secret length accepted by [`JwtVerifier::hs256`]: the hash
/// output size ([RFC 7518 §3.2](https://www.rfc-editor.org/rfc/rfc7518#section-3.2)).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// Claims a [`JwtVerifier`] can produce: your own claims type, with whatever
/// fields your tokens carry (roles, scope, tenant…).
///
/// Derive `serde::Deserialize` and `Clone`, and say where the subject and
/// the expiry are; that is all. Every `JwtClaims` is a [`Subject`] (used to
/// cap tickets per user and to check that an in-band re-authentication is by
/// the same user), and its expiry tells the
/// [`LifetimeGuard`](crate::first_message::LifetimeGuard) when to close the
/// socket.
///
/// ```
/// use serde::Deserialize;
/// use tower_ws_auth::jwt::JwtClaims;
///
/// #[derive(Clone, Deserialize)]
/// struct Claims {
///     sub: String,
///     exp: u64,
///     #[serde(default)]
///     roles: Vec<String>,
///     scope: Option<String>,
///     tenant: String,
/// }
///
/// impl JwtClaims for Claims {
///     fn subject(&self) -> &str { &self.sub }
///     fn expires_at(&self) -> Option<u64> { Some(self.exp) }
/// }
/// ```
///
/// Check them per route with
/// [`VerifierExt::require`](crate::VerifierExt::require), which refuses
/// with 403 and `WWW-Authenticate: Bearer error="insufficient_scope"`.
pub trait JwtClaims: DeserializeOwned + Clone + Send + Sync + 'static {
    /// The `sub` claim: who the token is about.
    fn subject(&self) -> &str;
    /// The `exp` claim, seconds since the Unix epoch.
    fn expires_at(&self) -> Option<u64>;
    /// The session the token belongs to (`sid`, or `jti`), for
    /// [`Revocations::revoke_session`](crate::revocation::Revocations::revoke_session).
    /// `None` by default.
    fn session_id(&self) -> Option<&str> {
        None
    }
    /// When the token was issued (`iat`), for
    /// [`Revocations::revoke_subject`](crate::revocation::Revocations::revoke_subject):
    /// a token issued up to a subject's logout is refused, one issued after
    /// works. `None` by default: every logout of the subject covers it.
    fn issued_at(&self) -> Option<SystemTime> {
        None
    }
}

impl<C: JwtClaims> Subject for C {
    fn subject(&self) -> &str {
        JwtClaims::subject(self)
    }
}

impl<C: JwtClaims> Revocable for C {
    fn session_id(&self) -> Option<&str> {
        JwtClaims::session_id(self)
    }

    fn issued_at(&self) -> Option<SystemTime> {
        JwtClaims::issued_at(self)
    }
}

/// The registered claims most applications need: `sub` and `exp`. Other claims
/// in the token are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicClaims {
    /// Subject: who the token is about.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

impl JwtClaims for BasicClaims {
    fn subject(&self) -> &str {
        &self.sub
    }

    fn expires_at(&self) -> Option<u64> {
        Some(self.exp)
    }
}

/// Make sure jsonwebtoken has a crypto backend for this process. Called by
/// [`JwtVerifier`]'s constructors; call it yourself before signing tokens with
/// jsonwebtoken in a program built with both backend features.
pub fn install_crypto_provider() -> Result<(), ConfigError> {
    #[cfg(all(feature = "rust-crypto", feature = "aws-lc-rs"))]
    {
        // jsonwebtoken refuses to pick between two backends by itself; an
        // explicit `aws-lc-rs` is the deliberate choice (`rust-crypto` is on
        // by default). An already installed provider is kept.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        Ok(())
    }
    #[cfg(all(
        any(feature = "rust-crypto", feature = "aws-lc-rs"),
        not(all(feature = "rust-crypto", feature = "aws-lc-rs"))
    ))]
    {
        Ok(())
    }
    #[cfg(not(any(feature = "rust-crypto", feature = "aws-lc-rs")))]
    {
        Err(ConfigError::new(
            "jsonwebtoken has no crypto backend: enable the `rust-crypto` or `aws-lc-rs` feature of tower-ws-auth",
        ))
    }
}

/// Verifies JWTs signed with one key; produces the claims `C`.
pub struct JwtVerifier<C> {
    inner: Arc<Inner>,
    _claims: PhantomData<fn() -> C>,
}

#[derive(Clone)]
struct Inner {
    key: DecodingKey,
    validation: Validation,
}

impl<C> Clone for JwtVerifier<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            _claims: PhantomData,
        }
    }
}

impl<C> fmt::Debug for JwtVerifier<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.inner.validation.algorithms)
            .field("key", &"[redacted]")
            .field("leeway", &self.inner.validation.leeway)
            .field("aud", &self.inner.validation.aud)
            .field("iss", &self.inner.validation.iss)
            .finish()
    }
}

impl<C: JwtClaims> JwtVerifier<C> {
    /// Verify with `key`, accepting only `algorithms`.
    ///
    /// # Errors
    ///
    /// An empty algorithm list, an algorithm of another family than the key
    /// (the configuration that makes HS/RS confusion possible), or no crypto
    /// backend compiled in.
    pub fn new(
        key: DecodingKey,
        algorithms: impl IntoIterator<Item = Algorithm>,
    ) -> Result<Self, ConfigError> {
        install_crypto_provider()?;
        let algorithms: Vec<Algorithm> = algorithms.into_iter().collect();
        if algorithms.is_empty() {
            return Err(ConfigError::new("the JWT algorithm allowlist is empty"));
        }
        if let Some(alg) = algorithms.iter().find(|a| a.family() != key.family()) {
            return Err(ConfigError::new(format!(
                "algorithm {alg:?} does not match the key's family {:?}",
                key.family()
            )));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                key,
                validation: validation(algorithms),
            }),
            _claims: PhantomData,
        })
    }

    /// HS256 with a shared secret.
    ///
    /// # Errors
    ///
    /// A secret shorter than [`MIN_HMAC_SECRET_LEN`] bytes.
    pub fn hs256(secret: &[u8]) -> Result<Self, ConfigError> {
        if secret.len() < MIN_HMAC_SECRET_LEN {
            return Err(ConfigError::new(format!(
                "an HS256 secret needs at least {MIN_HMAC_SECRET_LEN} bytes"
            )));
        }
        Self::new(DecodingKey::from_secret(secret), [Algorithm::HS256])
    }

    fn validation_mut(&mut self) -> &mut Validation {
        &mut Arc::make_mut(&mut self.inner).validation
    }

    /// Require `aud` to contain one of `audiences`.
    #[must_use]
    pub fn audience<T: ToString>(mut self, audiences: &[T]) -> Self {
        require_audience(self.validation_mut(), audiences);
        self
    }

    /// Require `iss` to be one of `issuers`.
    #[must_use]
    pub fn issuer<T: ToString>(mut self, issuers: &[T]) -> Self {
        require_issuer(self.validation_mut(), issuers);
        self
    }

    /// Clock-skew allowance for `exp` and `nbf` (default [`DEFAULT_LEEWAY`]).
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.validation_mut().leeway = leeway.as_secs();
        self
    }

    /// Verify a token directly.
    ///
    /// # Errors
    ///
    /// [`Expired`](AuthErrorKind::Expired) past `exp` (plus leeway);
    /// [`Invalid`](AuthErrorKind::Invalid) for every other failure: shape,
    /// signature, algorithm, `nbf`, `aud`, `iss`, missing claims, a `crit`
    /// header, an `exp` too far to represent.
    ///
    /// The returned `expires_at` is `exp` plus the leeway: the moment this
    /// verifier would start refusing the token.
    pub fn verify_token(&self, token: &str) -> Result<Verified<C>, AuthError> {
        decode_verified(token, &self.inner.key, &self.inner.validation)
    }
}

/// This crate's validation defaults for `algorithms` (non-empty, one family):
/// `exp` required, `nbf` checked, [`DEFAULT_LEEWAY`].
pub(crate) fn validation(algorithms: Vec<Algorithm>) -> Validation {
    let mut validation = Validation::new(algorithms.first().copied().unwrap_or_default());
    validation.algorithms = algorithms;
    validation.leeway = DEFAULT_LEEWAY.as_secs();
    validation.validate_nbf = true;
    validation.validate_exp = true;
    validation.set_required_spec_claims(&["exp"]);
    validation
}

/// Require `aud` to contain one of `audiences`.
pub(crate) fn require_audience<T: ToString>(validation: &mut Validation, audiences: &[T]) {
    validation.set_audience(audiences);
    validation.required_spec_claims.insert("aud".to_owned());
}

/// Require `iss` to be one of `issuers`.
pub(crate) fn require_issuer<T: ToString>(validation: &mut Validation, issuers: &[T]) {
    validation.set_issuer(issuers);
    validation.required_spec_claims.insert("iss".to_owned());
}

/// Verify `token` with `key` under `validation`, refuse a `crit` header, and
/// report `exp` + leeway as the expiry.
pub(crate) fn decode_verified<C: JwtClaims>(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Verified<C>, AuthError> {
    let data = jsonwebtoken::decode::<C>(token, key, validation)
        .map_err(|error| map_error(error.kind()))?;
    if data.header.crit.is_some() {
        // RFC 7515 §4.1.11: extensions listed in `crit` must be
        // understood, and this verifier understands none.
        return Err(AuthError::new(AuthErrorKind::Invalid)
            .with_detail("token has critical header extensions"));
    }
    // Accepted within the leeway means usable until `exp + leeway`: the
    // lifetime guard must not close at once what was just accepted.
    let expires_at = match data.claims.expires_at() {
        Some(secs) => Some(
            secs.checked_add(validation.leeway)
                .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
                .ok_or_else(|| {
                    AuthError::new(AuthErrorKind::Invalid).with_detail("token expiry out of range")
                })?,
        ),
        None => None,
    };
    Ok(Verified {
        identity: data.claims,
        expires_at,
    })
}

fn map_error(kind: &JwtErrorKind) -> AuthError {
    let (kind, detail) = match kind {
        JwtErrorKind::ExpiredSignature => (AuthErrorKind::Expired, "token expired"),
        JwtErrorKind::ImmatureSignature => (AuthErrorKind::Invalid, "token not yet valid"),
        JwtErrorKind::InvalidAudience => (AuthErrorKind::Invalid, "token audience not accepted"),
        JwtErrorKind::InvalidIssuer => (AuthErrorKind::Invalid, "token issuer not accepted"),
        JwtErrorKind::InvalidAlgorithm => (AuthErrorKind::Invalid, "token algorithm not accepted"),
        JwtErrorKind::InvalidSignature => (AuthErrorKind::Invalid, "invalid token signature"),
        JwtErrorKind::MissingRequiredClaim(_) => {
            (AuthErrorKind::Invalid, "token lacks a required claim")
        }
        _ => (AuthErrorKind::Invalid, "invalid token"),
    };
    AuthError::new(kind).with_detail(detail)
}

impl<C: JwtClaims> Verifier for JwtVerifier<C> {
    type Identity = C;
    type Future = Ready<Result<Verified<C>, AuthError>>;

    fn verify(&self, credential: Credential) -> Self::Future {
        ready(self.verify_token(credential.expose_secret()))
    }

    fn verify_now(&self, credential: Credential) -> Verification<Self::Future, C> {
        Verification::Ready(self.verify_token(credential.expose_secret()))
    }

    fn subject_of<'a>(&self, identity: &'a C) -> Option<&'a str> {
        Some(JwtClaims::subject(identity))
    }
}

/// A NumericDate claim ([RFC 7519 §2]: seconds since the epoch, possibly
/// with a fraction, such as an `iat` written to the millisecond) as a time,
/// to the microsecond. `None` for a negative, non-finite or unrepresentable
/// value.
///
/// For [`JwtClaims::issued_at`]: an `f64` holds seconds to about a quarter
/// of a microsecond, so `1764000026.244` may be stored as `…026.243999…`;
/// this reads it back as `…026.244`, where a plain conversion would place it
/// a millisecond early.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tower_ws_auth::jwt::numeric_date;
///
/// assert_eq!(numeric_date(1764000026.244), Some(UNIX_EPOCH + Duration::from_millis(1764000026244)));
/// assert_eq!(numeric_date(-1.0), None);
/// ```
///
/// [RFC 7519 §2]: https://www.rfc-editor.org/rfc/rfc7519#section-2
pub fn numeric_date(secs: f64) -> Option<SystemTime> {
    // Half a microsecond absorbs the representation error, no more.
    let micros = (secs * 1_000_000.0 + 0.5).floor();
    if !(0.0..=u64::MAX as f64).contains(&micros) {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::from_micros(micros as u64))
}

/// Seconds since the Unix epoch, for building `exp` claims.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(all(test, feature = "rust-crypto"))]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn token(claims: &serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn kind(v: &JwtVerifier<BasicClaims>, t: &str) -> AuthErrorKind {
        v.verify_token(t).unwrap_err().kind()
    }

    #[test]
    fn configuration_errors() {
        assert!(JwtVerifier::<BasicClaims>::hs256(b"short").is_err());
        assert!(JwtVerifier::<BasicClaims>::new(DecodingKey::from_secret(SECRET), []).is_err());
        assert!(JwtVerifier::<BasicClaims>::new(
            DecodingKey::from_secret(SECRET),
            [Algorithm::HS256, Algorithm::RS256]
        )
        .is_err());
    }

    #[test]
    fn claims_checks() {
        let v = JwtVerifier::<BasicClaims>::hs256(SECRET).unwrap();
        let now = now_secs();
        let ok = token(&serde_json::json!({"sub": "a", "exp": now + 60}));
        let verified = v.verify_token(&ok).unwrap();
        assert_eq!(verified.identity.sub, "a");
        assert_eq!(
            verified.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(now + 60) + DEFAULT_LEEWAY)
        );
        assert_eq!(
            kind(
                &v,
                &token(&serde_json::json!({"sub": "a", "exp": now - 30}))
            ),
            AuthErrorKind::Expired
        );
        assert_eq!(
            kind(
                &v,
                &token(&serde_json::json!({"sub": "a", "exp": now + 60, "nbf": now + 30}))
            ),
            AuthErrorKind::Invalid
        );
        assert_eq!(
            kind(
                &v,
                &token(&serde_json::json!({"sub": "a", "exp": now + 60, "aud": "other"}))
            ),
            AuthErrorKind::Invalid
        );
        assert_eq!(
            kind(&v, &token(&serde_json::json!({"sub": "a"}))),
            AuthErrorKind::Invalid
        );
        let with_aud = v.clone().audience(&["ws"]).issuer(&["me"]);
        let good =
            token(&serde_json::json!({"sub": "a", "exp": now + 60, "aud": "ws", "iss": "me"}));
        assert!(with_aud.verify_token(&good).is_ok());
        assert_eq!(
            kind(
                &with_aud,
                &token(&serde_json::json!({"sub": "a", "exp": now + 60, "aud": "ws"}))
            ),
            AuthErrorKind::Invalid
        );
    }

    #[test]
    fn edges_never_panic_and_crit_is_refused() {
        let v = JwtVerifier::<BasicClaims>::hs256(SECRET).unwrap();
        for exp in [1u64 << 63, u64::MAX, u64::MAX - 1] {
            let t = token(&serde_json::json!({"sub": "a", "exp": exp}));
            assert_eq!(kind(&v, &t), AuthErrorKind::Invalid, "exp {exp}");
        }
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["b64".into()]);
        let crit = encode(
            &header,
            &serde_json::json!({"sub": "a", "exp": now_secs() + 60}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(kind(&v, &crit), AuthErrorKind::Invalid);
        // Accepted within the leeway: still some life left.
        let late = token(&serde_json::json!({"sub": "a", "exp": now_secs() - 2}));
        let verified = v.verify_token(&late).unwrap();
        assert!(verified.expires_at.unwrap() > SystemTime::now());
    }

    #[test]
    fn debug_redacts_the_key() {
        let v = JwtVerifier::<BasicClaims>::hs256(SECRET).unwrap();
        let debug = format!("{v:?}");
        assert!(debug.contains("[redacted]"));
        assert!(!debug.contains("0123456789"));
    }
}
