//! [`OidcVerifier`]: verification against the key caches, and its builder.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeSliceError, Engine};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use tokio::sync::watch;

use super::cache::{Demand, KeyCache, Schedule, Source};
use super::discovery;
use super::http::HttpClient;
use super::jwks::{Choice, KeySet};
use super::{
    DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_REFRESH, DEFAULT_MAX_RESPONSE_SIZE, DEFAULT_MAX_STALE,
    DEFAULT_MIN_REFRESH, DEFAULT_REFRESH, DEFAULT_UNKNOWN_KEY_REFRESH,
};
use crate::credential::Credential;
use crate::error::{AuthError, AuthErrorKind, ConfigError};
use crate::jwt::{self, JwtClaims, DEFAULT_LEEWAY};
use crate::verify::{Verification, Verified, Verifier};

/// The algorithms accepted unless [`algorithms`](OidcVerifierBuilder::algorithms)
/// narrows them: every asymmetric one. Each key is further limited to its own
/// family, curve and `alg`, so this list cannot let one family's key verify
/// another's tokens.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Verifies JWTs signed by one or more OpenID providers with the keys they
/// publish; produces the claims `C`.
///
/// Cheap to clone (one `Arc`); clones share the key caches. The background
/// refresh tasks end when the last clone is dropped. See the
/// [module docs](super) for the checks, the cache and what happens when a
/// provider is down.
pub struct OidcVerifier<C> {
    inner: Arc<Inner>,
    _claims: PhantomData<fn() -> C>,
}

struct Inner {
    issuers: Vec<Arc<KeyCache>>,
    /// The allowlist: a token of another algorithm is refused before any key
    /// is looked for, so it cannot cost a fetch.
    algorithms: Vec<Algorithm>,
    access_tokens_only: bool,
    /// How long a token naming an unknown key waits for the refresh it
    /// triggered: discovery and key set, each within the fetch timeout.
    wait_limit: Duration,
    /// Dropped with the last verifier clone, which ends the refresh tasks.
    _stop: watch::Sender<()>,
}

impl<C> Clone for OidcVerifier<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            _claims: PhantomData,
        }
    }
}

impl<C> fmt::Debug for OidcVerifier<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcVerifier")
            .field(
                "issuers",
                &self
                    .inner
                    .issuers
                    .iter()
                    .map(|c| &*c.issuer)
                    .collect::<Vec<_>>(),
            )
            .field("access_tokens_only", &self.inner.access_tokens_only)
            .field("keys", &"[redacted]")
            .finish()
    }
}

impl<C: JwtClaims> OidcVerifier<C> {
    /// A builder with no issuer yet.
    pub fn builder() -> OidcVerifierBuilder<C> {
        OidcVerifierBuilder::new()
    }

    /// A builder for the provider at `issuer`, found by discovery: the same as
    /// `OidcVerifier::builder().discover(issuer)`.
    pub fn discover(issuer: impl Into<String>) -> OidcVerifierBuilder<C> {
        Self::builder().discover(issuer)
    }

    /// Verify a token with the keys already cached, without fetching or
    /// waiting.
    ///
    /// # Errors
    ///
    /// As [`JwtVerifier::verify_token`](crate::jwt::JwtVerifier::verify_token),
    /// and [`Unavailable`](AuthErrorKind::Unavailable) when the token's issuer
    /// has no usable keys (never fetched, or stale).
    pub fn verify_token(&self, token: &str) -> Result<Verified<C>, AuthError> {
        match self.inner.step(token) {
            Step::Done(result) => result,
            Step::Refresh(index) => Err(self.inner.unknown_key(index)),
        }
    }
}

/// Where verification stands after looking at the cache.
enum Step<C> {
    Done(Result<Verified<C>, AuthError>),
    /// The issuer at this index has no key for the token: a refresh may find it.
    Refresh(usize),
}

/// The protected header members that choose the key.
#[derive(Deserialize)]
struct Hint<'a> {
    alg: Algorithm,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
}

impl Hint<'_> {
    /// RFC 9068 §4: `typ` is `at+jwt` (media types compare without case).
    fn is_access_token(&self) -> bool {
        self.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
        })
    }
}

#[derive(Deserialize)]
struct Issuer<'a> {
    #[serde(borrow, default)]
    iss: Option<Cow<'a, str>>,
}

fn invalid(detail: &'static str) -> AuthError {
    AuthError::new(AuthErrorKind::Invalid).with_detail(detail)
}

impl Inner {
    fn step<C: JwtClaims>(&self, token: &str) -> Step<C> {
        let Some((encoded_header, rest)) = token.split_once('.') else {
            return Step::Done(Err(invalid("invalid token")));
        };
        let index = if self.issuers.len() == 1 {
            0
        } else {
            // Several issuers: the token's own `iss` picks the keys, among the
            // configured issuers only (it is checked again with the signature).
            match claimed_issuer(rest).and_then(|iss| self.position(&iss)) {
                Some(index) => index,
                None => return Step::Done(Err(invalid("token issuer not accepted"))),
            }
        };
        let cache = &self.issuers[index];
        let snapshot = cache.load();
        // The fast path: a header these keys verified before chooses the same
        // key again (and passed the checks below then).
        if let Some(key) = snapshot.keys.remembered(encoded_header) {
            let key = snapshot.keys.key(key);
            return Step::Done(jwt::decode_verified(token, &key.key, &key.validation));
        }
        // Most headers fit on the stack; the credential cap bounds the rest.
        let mut buffer = [0u8; 384];
        let heap;
        let header = match URL_SAFE_NO_PAD.decode_slice(encoded_header, &mut buffer) {
            Ok(len) => &buffer[..len],
            Err(DecodeSliceError::OutputSliceTooSmall) => {
                match URL_SAFE_NO_PAD.decode(encoded_header) {
                    Ok(decoded) => {
                        heap = decoded;
                        &heap[..]
                    }
                    Err(_) => return Step::Done(Err(invalid("invalid token"))),
                }
            }
            Err(DecodeSliceError::DecodeError(_)) => {
                return Step::Done(Err(invalid("invalid token")))
            }
        };
        let Ok(hint) = serde_json::from_slice::<Hint<'_>>(header) else {
            return Step::Done(Err(invalid("invalid token header")));
        };
        if !self.algorithms.contains(&hint.alg) {
            return Step::Done(Err(invalid("token algorithm not accepted")));
        }
        if self.access_tokens_only && !hint.is_access_token() {
            return Step::Done(Err(invalid("not an access token (typ at+jwt)")));
        }
        match snapshot.keys.choose(hint.alg, hint.kid.as_deref()) {
            Choice::Key(chosen) => {
                let key = snapshot.keys.key(chosen);
                let verified = jwt::decode_verified(token, &key.key, &key.validation);
                if verified.is_ok() {
                    snapshot.keys.remember(encoded_header, chosen);
                }
                Step::Done(verified)
            }
            Choice::Refused(why) => Step::Done(Err(invalid(why))),
            Choice::Unknown => {
                // Only a token that claims this issuer may cost it a fetch.
                if self.issuers.len() == 1 && claimed_issuer(rest).as_deref() != Some(&cache.issuer)
                {
                    return Step::Done(Err(invalid("token issuer not accepted")));
                }
                Step::Refresh(index)
            }
        }
    }

    fn position(&self, issuer: &str) -> Option<usize> {
        self.issuers.iter().position(|c| &*c.issuer == issuer)
    }

    /// The refusal for a token whose key is still not cached.
    fn unknown_key(&self, index: usize) -> AuthError {
        let cache = &self.issuers[index];
        if !cache.load().usable || cache.last_failed() {
            // Perhaps signed with a key this verifier could not fetch: 503,
            // retryable, never a verdict on the token.
            AuthError::new(AuthErrorKind::Unavailable)
                .with_detail("the identity provider's keys are unavailable")
        } else {
            invalid("token signed with a key its issuer does not publish")
        }
    }
}

/// The `iss` claim of `payload.signature`, unverified: only to choose keys.
fn claimed_issuer(rest: &str) -> Option<String> {
    let payload = rest.split_once('.').map_or(rest, |(payload, _)| payload);
    let decoded = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let issuer: Issuer<'_> = serde_json::from_slice(&decoded).ok()?;
    issuer.iss.map(Cow::into_owned)
}

async fn after_refresh<C: JwtClaims>(
    inner: Arc<Inner>,
    mut attempts: watch::Receiver<u64>,
    credential: Credential,
) -> Result<Verified<C>, AuthError> {
    // A timeout or a closed channel leaves the cache as it is: look again
    // either way.
    let _ = tokio::time::timeout(inner.wait_limit, attempts.changed()).await;
    match inner.step(credential.expose_secret()) {
        Step::Done(result) => result,
        Step::Refresh(index) => Err(inner.unknown_key(index)),
    }
}

impl<C: JwtClaims> Verifier for OidcVerifier<C> {
    type Identity = C;
    type Future = VerifyFuture<C>;

    fn verify(&self, credential: Credential) -> VerifyFuture<C> {
        match self.verify_now(credential) {
            Verification::Ready(result) => VerifyFuture::ready(result),
            Verification::Pending(future) => future,
        }
    }

    /// Ready at once when the token's key is cached (or the token is refused
    /// without a fetch); pending only while a refresh its unknown `kid`
    /// triggered is under way.
    fn verify_now(&self, credential: Credential) -> Verification<VerifyFuture<C>, C> {
        match self.inner.step(credential.expose_secret()) {
            Step::Done(result) => Verification::Ready(result),
            Step::Refresh(index) => match self.inner.issuers[index].demand() {
                Demand::Wait(attempts) => Verification::Pending(VerifyFuture {
                    state: State::Waiting(Box::pin(after_refresh(
                        Arc::clone(&self.inner),
                        attempts,
                        credential,
                    ))),
                }),
                Demand::Refused => Verification::Ready(Err(self.inner.unknown_key(index))),
            },
        }
    }
}

/// The future of [`OidcVerifier`]'s verification: ready at once unless the
/// token names a key that is being fetched.
///
/// # Panics
///
/// When polled again after it completed.
#[must_use = "futures do nothing unless polled"]
pub struct VerifyFuture<C> {
    state: State<C>,
}

type Waiting<C> = Pin<Box<dyn Future<Output = Result<Verified<C>, AuthError>> + Send>>;

enum State<C> {
    Ready(Option<Result<Verified<C>, AuthError>>),
    Waiting(Waiting<C>),
}

impl<C> VerifyFuture<C> {
    fn ready(result: Result<Verified<C>, AuthError>) -> Self {
        Self {
            state: State::Ready(Some(result)),
        }
    }
}

// Nothing in the state is pinned in place: the identity is moved out by
// value, and the waiting future is boxed.
impl<C> Unpin for VerifyFuture<C> {}

impl<C> Future for VerifyFuture<C> {
    type Output = Result<Verified<C>, AuthError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            State::Ready(result) => Poll::Ready(
                result
                    .take()
                    .unwrap_or_else(|| panic!("VerifyFuture polled after completion")),
            ),
            State::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}

impl<C> fmt::Debug for VerifyFuture<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Ready(_) => "ready",
            State::Waiting(_) => "waiting for the provider's keys",
        };
        f.debug_struct("VerifyFuture")
            .field("state", &state)
            .finish()
    }
}

/// Configures an [`OidcVerifier`]: its issuers, audience and algorithms, and
/// the key cache's timing. Errors are reported by [`build`](Self::build).
pub struct OidcVerifierBuilder<C> {
    issuers: Vec<(String, Pending)>,
    audience: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    access_tokens_only: bool,
    allow_http: bool,
    fetch_timeout: Duration,
    max_response_size: usize,
    default_refresh: Duration,
    min_refresh: Duration,
    max_refresh: Duration,
    unknown_key_refresh: Duration,
    max_stale: Duration,
    _claims: PhantomData<fn() -> C>,
}

enum Pending {
    Discover,
    JwksUrl(String),
    Document(Vec<u8>),
    File(PathBuf),
}

impl<C> fmt::Debug for OidcVerifierBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcVerifierBuilder")
            .field(
                "issuers",
                &self.issuers.iter().map(|(i, _)| i).collect::<Vec<_>>(),
            )
            .field("audience", &self.audience)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl<C: JwtClaims> OidcVerifierBuilder<C> {
    fn new() -> Self {
        Self {
            issuers: Vec::new(),
            audience: Vec::new(),
            algorithms: ASYMMETRIC.to_vec(),
            leeway: DEFAULT_LEEWAY,
            access_tokens_only: false,
            allow_http: false,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            max_response_size: DEFAULT_MAX_RESPONSE_SIZE,
            default_refresh: DEFAULT_REFRESH,
            min_refresh: DEFAULT_MIN_REFRESH,
            max_refresh: DEFAULT_MAX_REFRESH,
            unknown_key_refresh: DEFAULT_UNKNOWN_KEY_REFRESH,
            max_stale: DEFAULT_MAX_STALE,
            _claims: PhantomData,
        }
    }

    fn add(mut self, issuer: impl Into<String>, source: Pending) -> Self {
        self.issuers.push((issuer.into(), source));
        self
    }

    /// Accept tokens from the provider at `issuer`, finding its keys by
    /// discovery. `issuer` is compared byte for byte with the discovery
    /// document's `issuer` and with each token's `iss` (a trailing `/` matters).
    #[must_use]
    pub fn discover(self, issuer: impl Into<String>) -> Self {
        self.add(issuer, Pending::Discover)
    }

    /// Accept tokens whose `iss` is `issuer`, with the keys published at
    /// `jwks_url`.
    #[must_use]
    pub fn jwks_url(self, issuer: impl Into<String>, jwks_url: impl Into<String>) -> Self {
        self.add(issuer, Pending::JwksUrl(jwks_url.into()))
    }

    /// Accept tokens whose `iss` is `issuer`, with the keys of this JWKS
    /// document, never fetched.
    #[must_use]
    pub fn jwks(self, issuer: impl Into<String>, document: impl AsRef<[u8]>) -> Self {
        self.add(issuer, Pending::Document(document.as_ref().to_vec()))
    }

    /// As [`jwks`](Self::jwks), with the document read from `path` by
    /// [`build`](Self::build).
    #[must_use]
    pub fn jwks_file(self, issuer: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.add(issuer, Pending::File(path.into()))
    }

    /// Require `aud` to contain one of `audiences` (required: an access token
    /// is meant for one API, [RFC 9068 §4]). For ID tokens, the audience is the
    /// client's id.
    ///
    /// [RFC 9068 §4]: https://www.rfc-editor.org/rfc/rfc9068#section-4
    #[must_use]
    pub fn audience<T: ToString>(mut self, audiences: &[T]) -> Self {
        self.audience = audiences.iter().map(ToString::to_string).collect();
        self
    }

    /// The algorithm allowlist (default: every asymmetric algorithm; a key
    /// verifies only those of its own family, curve and `alg`).
    #[must_use]
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Clock-skew allowance for `exp` and `nbf` (default
    /// [`DEFAULT_LEEWAY`](crate::jwt::DEFAULT_LEEWAY)).
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Refuse every token that is not an access token in the RFC 9068 form
    /// (`typ: at+jwt`), ID tokens among them.
    #[must_use]
    pub fn access_tokens_only(mut self) -> Self {
        self.access_tokens_only = true;
        self
    }

    /// Allow plain `http` provider URLs off loopback.
    ///
    /// # Security
    ///
    /// Whoever can alter the traffic can then substitute keys and mint tokens:
    /// only for a network you trust as much as the provider itself.
    #[must_use]
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Timeout for each fetch (default [`DEFAULT_FETCH_TIMEOUT`]).
    #[must_use]
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Largest document accepted, in bytes (default
    /// [`DEFAULT_MAX_RESPONSE_SIZE`]).
    #[must_use]
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.max_response_size = bytes;
        self
    }

    /// Refresh schedule: after `default` when the provider sends no `max-age`,
    /// and the provider's `max-age` clamped to `min..=max` (defaults
    /// [`DEFAULT_REFRESH`], [`DEFAULT_MIN_REFRESH`], [`DEFAULT_MAX_REFRESH`]).
    #[must_use]
    pub fn refresh(mut self, default: Duration, min: Duration, max: Duration) -> Self {
        self.default_refresh = default;
        self.min_refresh = min;
        self.max_refresh = max;
        self
    }

    /// At most one refresh per `interval` triggered by tokens naming a key
    /// that is not cached (default [`DEFAULT_UNKNOWN_KEY_REFRESH`]).
    #[must_use]
    pub fn unknown_key_refresh(mut self, interval: Duration) -> Self {
        self.unknown_key_refresh = interval;
        self
    }

    /// How long keys keep working after the last successful fetch while the
    /// provider cannot be reached (default [`DEFAULT_MAX_STALE`]).
    #[must_use]
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = max_stale;
        self
    }

    /// Build the verifier and start fetching keys in the background. Returns
    /// at once: until the first keys arrive, tokens wait for them (up to twice
    /// the fetch timeout) and are refused with 503 when they do not come.
    ///
    /// # Errors
    ///
    /// No issuer, an issuer given twice, no audience, an empty allowlist or a
    /// symmetric (HS) algorithm in it, a URL that is not `https` (outside
    /// loopback, without [`allow_http`](Self::allow_http)), a JWKS document or
    /// file that is not a key set, a schedule whose `min` exceeds its `max` or
    /// whose `max_stale` is shorter than `max`, no crypto backend compiled
    /// in, or, with a provider to fetch from, no tokio runtime to run the
    /// refresh in.
    pub fn build(self) -> Result<OidcVerifier<C>, ConfigError> {
        jwt::install_crypto_provider()?;
        if self.issuers.is_empty() {
            return Err(ConfigError::new("an OpenID verifier needs an issuer"));
        }
        if self.audience.is_empty() {
            return Err(ConfigError::new(
                "an OpenID verifier needs an audience: the `aud` the provider puts in tokens for this API",
            ));
        }
        if self.algorithms.is_empty() {
            return Err(ConfigError::new("the JWT algorithm allowlist is empty"));
        }
        if let Some(alg) = self.algorithms.iter().find(|a| !ASYMMETRIC.contains(a)) {
            return Err(ConfigError::new(format!(
                "{alg:?} is a shared-secret algorithm: a provider's published keys are public keys"
            )));
        }
        if self.min_refresh > self.max_refresh || self.max_stale < self.max_refresh {
            return Err(ConfigError::new(
                "the refresh schedule needs min <= max <= max_stale",
            ));
        }
        let schedule = Schedule {
            default_refresh: self.default_refresh,
            min_refresh: self.min_refresh,
            max_refresh: self.max_refresh,
            unknown_key_refresh: self.unknown_key_refresh,
            max_stale: self.max_stale,
            allow_http: self.allow_http,
        };
        let mut caches = Vec::with_capacity(self.issuers.len());
        for (issuer, pending) in self.issuers {
            if caches.iter().any(|c: &KeyCache| *c.issuer == issuer) {
                return Err(ConfigError::new(format!(
                    "issuer {issuer} is configured twice"
                )));
            }
            let mut validation = jwt::validation(self.algorithms.clone());
            validation.leeway = self.leeway.as_secs();
            jwt::require_audience(&mut validation, &self.audience);
            jwt::require_issuer(&mut validation, &[&issuer]);
            let bad = |why: &str| ConfigError::new(format!("issuer {issuer}: {why}"));
            let parse = |document: &[u8]| {
                KeySet::parse(document, &self.algorithms, &validation).map_err(|e| bad(e.message()))
            };
            let (source, keys) = match pending {
                Pending::Discover => {
                    discovery::issuer_url(&issuer, self.allow_http).map_err(bad)?;
                    let url =
                        discovery::configuration_url(&issuer, self.allow_http).map_err(bad)?;
                    (Source::Discover(url), None)
                }
                Pending::JwksUrl(url) => {
                    let url = discovery::provider_url(&url, self.allow_http).map_err(bad)?;
                    (Source::Jwks(url), None)
                }
                Pending::Document(document) => (Source::Fixed, Some(parse(&document)?)),
                Pending::File(path) => {
                    let document = std::fs::read(&path).map_err(|e| {
                        ConfigError::new(format!(
                            "issuer {issuer}: cannot read {}: {e}",
                            path.display()
                        ))
                    })?;
                    (Source::Fixed, Some(parse(&document)?))
                }
            };
            caches.push(KeyCache::new(
                issuer.into_boxed_str(),
                source,
                keys,
                self.algorithms.clone(),
                validation,
                schedule.clone(),
            ));
        }
        let issuers: Vec<Arc<KeyCache>> = caches.into_iter().map(Arc::new).collect();
        let (stop, stopped) = watch::channel(());
        if issuers.iter().any(|c| c.is_remote()) {
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                ConfigError::new(
                    "an OpenID verifier that fetches keys is built inside a tokio runtime",
                )
            })?;
            let client = HttpClient::new(self.fetch_timeout, self.max_response_size)?;
            for cache in issuers.iter().filter(|c| c.is_remote()) {
                runtime.spawn(Arc::clone(cache).run(client.clone(), stopped.clone()));
            }
        }
        Ok(OidcVerifier {
            inner: Arc::new(Inner {
                issuers,
                algorithms: self.algorithms,
                access_tokens_only: self.access_tokens_only,
                wait_limit: self.fetch_timeout.saturating_mul(2),
                _stop: stop,
            }),
            _claims: PhantomData,
        })
    }
}

#[cfg(all(test, feature = "rust-crypto"))]
mod tests {
    use super::*;
    use crate::credential::SourceKind;
    use crate::jwt::{now_secs, BasicClaims};
    use jsonwebtoken::{encode, EncodingKey, Header};

    const JWKS: &str = r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
        "x": "i6UlN3CWYp8OkYI3cIjzsdWcO2gihmpucvGNza3Ql4w", "y": "fJ16DG_HFzh_ffzNch5SX9tOQWSVL6WxFEqr4i2WVgg"}]}"#;
    const PRIVATE_KEY: &[u8] = b"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgDjmaoIIZYxu/fZrV
CRcvX8K2ES0+Nrjruluyuj+filmhRANCAASLpSU3cJZinw6RgjdwiPOx1Zw7aCKG
am5y8Y3NrdCXjHydegxvxxc4f338zXIeUl/bTkFklS+lsRRKq+ItllYI
-----END PRIVATE KEY-----";

    fn sign(kid: Option<&str>, typ: Option<&str>, iss: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(Into::into);
        header.typ = typ.map(Into::into);
        let claims =
            serde_json::json!({"iss": iss, "aud": "api", "sub": "alice", "exp": now_secs() + 60});
        encode(
            &header,
            &claims,
            &EncodingKey::from_ec_pem(PRIVATE_KEY).unwrap(),
        )
        .unwrap()
    }

    fn fixed() -> OidcVerifierBuilder<BasicClaims> {
        OidcVerifier::builder()
            .jwks("https://a.example", JWKS)
            .audience(&["api"])
    }

    fn kind(result: Result<Verified<BasicClaims>, AuthError>) -> AuthErrorKind {
        result.unwrap_err().kind()
    }

    fn now(
        v: &OidcVerifier<BasicClaims>,
        token: &str,
    ) -> Verification<VerifyFuture<BasicClaims>, BasicClaims> {
        v.verify_now(Credential::new(SourceKind::Header, token))
    }

    #[test]
    fn configuration_errors() {
        let none = OidcVerifier::<BasicClaims>::builder().audience(&["api"]);
        assert!(none.build().is_err());
        assert!(OidcVerifier::<BasicClaims>::builder()
            .jwks("https://a.example", JWKS)
            .build()
            .is_err());
        assert!(fixed().algorithms([Algorithm::HS256]).build().is_err());
        assert!(fixed().algorithms([]).build().is_err());
        assert!(fixed().jwks("https://a.example", JWKS).build().is_err());
        assert!(fixed().jwks("https://b.example", "{}").build().is_err());
        assert!(fixed()
            .jwks_file("https://b.example", "/nonexistent/jwks.json")
            .build()
            .is_err());
        assert!(fixed().discover("http://id.example").build().is_err());
        assert!(fixed().discover("https://id.example?x").build().is_err());
        // A provider to fetch from needs a runtime for the refresh.
        assert!(fixed().discover("https://id.example").build().is_err());
        assert!(fixed()
            .refresh(
                DEFAULT_REFRESH,
                Duration::from_secs(10),
                Duration::from_secs(5)
            )
            .build()
            .is_err());
        assert!(fixed().max_stale(Duration::from_secs(1)).build().is_err());
    }

    #[test]
    fn fixed_keys_decide_at_once() {
        let v = fixed().build().unwrap();
        let good = sign(Some("k1"), Some("at+jwt"), "https://a.example");
        assert!(matches!(now(&v, &good), Verification::Ready(Ok(_))));
        assert_eq!(v.verify_token(&good).unwrap().identity.sub, "alice");
        // Unknown kid: a fixed set is never fetched, so refused at once.
        let unknown = sign(Some("k2"), None, "https://a.example");
        assert!(
            matches!(now(&v, &unknown), Verification::Ready(Err(e)) if e.kind() == AuthErrorKind::Invalid)
        );
        // No kid, one key: used.
        assert!(v
            .verify_token(&sign(None, None, "https://a.example"))
            .is_ok());
        assert_eq!(
            kind(v.verify_token(&sign(Some("k1"), None, "https://b.example"))),
            AuthErrorKind::Invalid
        );
        for garbage in ["", "a", "a.b", "a.b.c", "!!!.b.c", "e30.e30.e30"] {
            assert_eq!(
                kind(v.verify_token(garbage)),
                AuthErrorKind::Invalid,
                "{garbage}"
            );
        }
        let debug = format!("{v:?}");
        assert!(debug.contains("[redacted]") && !debug.contains("i6UlN3"));
    }

    #[test]
    fn access_tokens_only_refuses_other_types() {
        let v = fixed().access_tokens_only().build().unwrap();
        for typ in ["at+jwt", "application/at+JWT"] {
            assert!(v
                .verify_token(&sign(Some("k1"), Some(typ), "https://a.example"))
                .is_ok());
        }
        for typ in [None, Some("JWT"), Some("jwt")] {
            assert_eq!(
                kind(v.verify_token(&sign(Some("k1"), typ, "https://a.example"))),
                AuthErrorKind::Invalid
            );
        }
    }

    #[test]
    fn several_issuers_choose_by_iss() {
        let other = r#"{"keys": []}"#;
        let v = fixed().jwks("https://b.example", other).build().unwrap();
        assert!(v
            .verify_token(&sign(Some("k1"), None, "https://a.example"))
            .is_ok());
        // Same key, but b's set does not hold it.
        assert_eq!(
            kind(v.verify_token(&sign(Some("k1"), None, "https://b.example"))),
            AuthErrorKind::Invalid
        );
        assert_eq!(
            kind(v.verify_token(&sign(Some("k1"), None, "https://c.example"))),
            AuthErrorKind::Invalid
        );
    }

    #[tokio::test]
    async fn unreachable_provider_fails_closed_and_tasks_end_with_the_last_clone() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let issuer = format!("http://127.0.0.1:{port}");
        let v = OidcVerifier::<BasicClaims>::builder()
            .jwks_url(issuer.clone(), format!("{issuer}/jwks"))
            .audience(&["api"])
            .fetch_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let token = sign(Some("k1"), None, &issuer);
        let error = v
            .verify(Credential::new(SourceKind::Header, &token))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), AuthErrorKind::Unavailable);
        assert_eq!(error.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        // Another issuer's token costs no fetch and is a plain refusal.
        let stranger = sign(Some("k1"), None, "https://c.example");
        assert!(
            matches!(now(&v, &stranger), Verification::Ready(Err(e)) if e.kind() == AuthErrorKind::Invalid)
        );

        // A shared-secret token is refused before any key is looked for.
        let hs = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"iss": issuer, "aud": "api", "sub": "a", "exp": now_secs() + 60}),
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(
            matches!(now(&v, &hs), Verification::Ready(Err(e)) if e.kind() == AuthErrorKind::Invalid)
        );

        let cache = Arc::downgrade(&v.inner.issuers[0]);
        let clone = v.clone();
        drop(v);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(cache.upgrade().is_some(), "a clone still holds the cache");
        drop(clone);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while cache.upgrade().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the refresh task outlived the verifier"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
