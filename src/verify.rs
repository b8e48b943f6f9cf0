//! Turning a credential into a verified identity.
//!
//! A [`Verifier`] is anything that maps a [`Credential`] to a [`Verified`]
//! identity (and when it expires) or an [`AuthError`]. The crate ships
//! [`JwtVerifier`](crate::jwt::JwtVerifier) and the ticket verifier; any
//! `Fn(Credential) -> impl Future<Output = Result<Verified<I>, AuthError>>`
//! closure is one too, which is how a session-store look-up plugs in.
//!
//! ```
//! use std::collections::HashMap;
//! use std::future::{ready, Ready};
//! use std::sync::Arc;
//! use tower_ws_auth::{AuthError, AuthErrorKind, Credential, SourceKind, Verified, Verifier};
//!
//! let sessions = Arc::new(HashMap::from([("s1".to_owned(), "alice".to_owned())]));
//! let verifier = move |credential: Credential| -> Ready<Result<Verified<String>, AuthError>> {
//!     ready(match sessions.get(credential.expose_secret()) {
//!         Some(user) => Ok(Verified::new(user.clone())),
//!         None => Err(AuthErrorKind::Invalid.into()),
//!     })
//! };
//!
//! # tokio_test_block_on(async {
//! let ok = verifier.verify(Credential::new(SourceKind::Cookie, "s1")).await.unwrap();
//! assert_eq!(ok.identity, "alice");
//! let err = verifier.verify(Credential::new(SourceKind::Cookie, "nope")).await.unwrap_err();
//! assert_eq!(err.kind(), AuthErrorKind::Invalid);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
//!
//! A store that cannot be reached must answer
//! [`AuthError::unavailable`]: the layer then refuses the connection with 503
//! (it fails closed, never open).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use pin_project_lite::pin_project;

use crate::credential::{Credential, SourceKind};
use crate::error::{AuthError, AuthErrorKind};

/// The verified identity of a connection, found in the request extensions
/// (and, with the `axum` feature, an extractor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated<I> {
    /// Who the client is.
    pub identity: I,
    /// Where the credential was found.
    pub via: SourceKind,
    /// When the credential expires, if it does; hand it to the
    /// [`LifetimeGuard`](crate::first_message::LifetimeGuard) to close the socket then.
    pub expires_at: Option<SystemTime>,
}

/// A verified identity and the moment its credential stops being valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified<I> {
    /// Who the client is.
    pub identity: I,
    /// When the credential that proved it expires, if it does.
    pub expires_at: Option<SystemTime>,
}

impl<I> Verified<I> {
    /// An identity whose credential does not expire.
    pub fn new(identity: I) -> Self {
        Self {
            identity,
            expires_at: None,
        }
    }

    /// Set when the credential expires.
    #[must_use]
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }
}

/// Verifies a credential.
///
/// Implemented for [`JwtVerifier`](crate::jwt::JwtVerifier), the ticket
/// verifier, and every closure `Fn(Credential) -> Fut` whose future resolves to
/// `Result<Verified<I>, AuthError>`.
pub trait Verifier {
    /// The verified identity, put in the request extensions. `http` requires
    /// extension values to be `Clone + Send + Sync + 'static`.
    type Identity: Clone + Send + Sync + 'static;

    /// The verification's future. Synchronous verifiers (JWT, in-memory
    /// tickets) use [`std::future::Ready`], so the request path allocates
    /// nothing for it.
    type Future: Future<Output = Result<Verified<Self::Identity>, AuthError>>;

    /// Verify `credential`.
    ///
    /// The future resolves to an error of kind
    /// [`Invalid`](crate::AuthErrorKind::Invalid) or
    /// [`Expired`](crate::AuthErrorKind::Expired) for a bad credential, and
    /// [`Unavailable`](crate::AuthErrorKind::Unavailable) when a backend cannot be
    /// reached.
    fn verify(&self, credential: Credential) -> Self::Future;

    /// Verify without waiting, when this verifier can (JWTs, in-memory
    /// tickets): the upgrade layer then hands the request straight to the
    /// inner service instead of moving a clone of it into the response
    /// future. The default hands the credential back for
    /// [`verify`](Self::verify).
    fn verify_now(&self, credential: Credential) -> Verification<Self::Future, Self::Identity> {
        Verification::Pending(self.verify(credential))
    }

    /// The subject of an identity this verifier produced, for logs and
    /// metrics (never a secret). `None` (the default) when it does not know:
    /// the closure verifiers, for instance.
    fn subject_of<'a>(&self, identity: &'a Self::Identity) -> Option<&'a str> {
        let _ = identity;
        None
    }
}

/// A verification that finished at once, or the future that will finish it.
#[derive(Debug)]
pub enum Verification<F, I> {
    /// Already decided.
    Ready(Result<Verified<I>, AuthError>),
    /// Still to be awaited.
    Pending(F),
}

impl<F, Fut, I> Verifier for F
where
    F: Fn(Credential) -> Fut,
    Fut: Future<Output = Result<Verified<I>, AuthError>>,
    I: Clone + Send + Sync + 'static,
{
    type Identity = I;
    type Future = Fut;

    fn verify(&self, credential: Credential) -> Fut {
        self(credential)
    }
}

/// The stable name of an identity: who it is, independent of which credential
/// proved it. Used to cap outstanding tickets per user and to check that an
/// in-band re-authentication is by the same user.
pub trait Subject {
    /// The subject, e.g. a JWT's `sub` or a user id.
    fn subject(&self) -> &str;
}

impl Subject for String {
    fn subject(&self) -> &str {
        self
    }
}

impl Subject for std::sync::Arc<str> {
    fn subject(&self) -> &str {
        self
    }
}

impl<I: Subject> Subject for Authenticated<I> {
    fn subject(&self) -> &str {
        self.identity.subject()
    }
}

/// Combinators on every [`Verifier`]: claims checks and identity mapping.
///
/// ```
/// use std::future::{ready, Ready};
/// use tower_ws_auth::{AuthError, AuthErrorKind, Credential, SourceKind, Verified, Verifier, VerifierExt};
///
/// #[derive(Clone)]
/// struct Claims { sub: String, roles: Vec<String> }
///
/// let lookup = |c: Credential| -> Ready<Result<Verified<Claims>, AuthError>> {
///     let roles = if c.ct_eq("admin-token") { vec!["chat".into()] } else { vec![] };
///     ready(Ok(Verified::new(Claims { sub: "alice".into(), roles })))
/// };
/// // Only identities with the `chat` role; the handler gets just the name.
/// let verifier = lookup
///     .require(|claims: &Claims| claims.roles.iter().any(|r| r == "chat"))
///     .map_identity(|claims: Claims| claims.sub);
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let ok = verifier.verify(Credential::new(SourceKind::Header, "admin-token")).await.unwrap();
/// assert_eq!(ok.identity, "alice");
/// let refused = verifier.verify(Credential::new(SourceKind::Header, "guest-token")).await.unwrap_err();
/// assert_eq!(refused.kind(), AuthErrorKind::InsufficientScope);
/// assert_eq!(refused.status(), http::StatusCode::FORBIDDEN);
/// assert_eq!(refused.www_authenticate(), Some(r#"Bearer error="insufficient_scope""#));
/// # });
/// ```
pub trait VerifierExt: Verifier + Sized {
    /// Refuse identities for which `check` is false, with
    /// [`InsufficientScope`](crate::AuthErrorKind::InsufficientScope): 403
    /// and `WWW-Authenticate: Bearer error="insufficient_scope"` at the
    /// upgrade, close 4003 after it. Runs after the credential verified, so
    /// a bad credential is still 401.
    fn require<F>(self, check: F) -> Require<Self, F>
    where
        F: Fn(&Self::Identity) -> bool,
    {
        Require {
            verifier: self,
            check,
        }
    }

    /// Turn the verified identity into another type, e.g. one variant of an
    /// enum, so that verifiers of different identity types (a JWT's claims, a
    /// session's user) can share one [`WsAuthLayer`](crate::WsAuthLayer).
    fn map_identity<F, I2>(self, map: F) -> MapIdentity<Self, F>
    where
        F: Fn(Self::Identity) -> I2,
        I2: Clone + Send + Sync + 'static,
    {
        MapIdentity {
            verifier: self,
            map,
        }
    }
}

impl<V: Verifier> VerifierExt for V {}

/// A verifier that also checks the identity. See [`VerifierExt::require`].
#[derive(Clone)]
pub struct Require<V, F> {
    verifier: V,
    check: F,
}

impl<V: fmt::Debug, F> fmt::Debug for Require<V, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Require")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

fn required<I>(
    outcome: Result<Verified<I>, AuthError>,
    check: &impl Fn(&I) -> bool,
) -> Result<Verified<I>, AuthError> {
    let verified = outcome?;
    if check(&verified.identity) {
        Ok(verified)
    } else {
        Err(AuthError::new(AuthErrorKind::InsufficientScope))
    }
}

impl<V, F> Verifier for Require<V, F>
where
    V: Verifier,
    F: Fn(&V::Identity) -> bool + Clone,
{
    type Identity = V::Identity;
    type Future = RequireFuture<V::Future, F>;

    fn verify(&self, credential: Credential) -> Self::Future {
        RequireFuture {
            inner: self.verifier.verify(credential),
            check: Some(self.check.clone()),
        }
    }

    fn verify_now(&self, credential: Credential) -> Verification<Self::Future, Self::Identity> {
        match self.verifier.verify_now(credential) {
            Verification::Ready(outcome) => Verification::Ready(required(outcome, &self.check)),
            Verification::Pending(inner) => Verification::Pending(RequireFuture {
                inner,
                check: Some(self.check.clone()),
            }),
        }
    }

    fn subject_of<'a>(&self, identity: &'a Self::Identity) -> Option<&'a str> {
        self.verifier.subject_of(identity)
    }
}

pin_project! {
    /// The future of a [`Require`] verifier.
    pub struct RequireFuture<Fut, F> {
        #[pin]
        inner: Fut,
        check: Option<F>,
    }
}

impl<Fut, F> fmt::Debug for RequireFuture<Fut, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireFuture").finish_non_exhaustive()
    }
}

impl<Fut, F, I> Future for RequireFuture<Fut, F>
where
    Fut: Future<Output = Result<Verified<I>, AuthError>>,
    F: Fn(&I) -> bool,
{
    type Output = Result<Verified<I>, AuthError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = std::task::ready!(this.inner.poll(cx));
        Poll::Ready(match this.check.take() {
            Some(check) => required(outcome, &check),
            None => Err(AuthError::new(AuthErrorKind::Invalid)
                .with_detail("verification polled after completion")),
        })
    }
}

/// A verifier whose identity is mapped. See [`VerifierExt::map_identity`].
#[derive(Clone)]
pub struct MapIdentity<V, F> {
    verifier: V,
    map: F,
}

impl<V: fmt::Debug, F> fmt::Debug for MapIdentity<V, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapIdentity")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

fn mapped<I, I2>(
    outcome: Result<Verified<I>, AuthError>,
    map: &impl Fn(I) -> I2,
) -> Result<Verified<I2>, AuthError> {
    outcome.map(|verified| Verified {
        identity: map(verified.identity),
        expires_at: verified.expires_at,
    })
}

impl<V, F, I2> Verifier for MapIdentity<V, F>
where
    V: Verifier,
    F: Fn(V::Identity) -> I2 + Clone,
    I2: Clone + Send + Sync + 'static,
{
    type Identity = I2;
    type Future = MapIdentityFuture<V::Future, F>;

    fn verify(&self, credential: Credential) -> Self::Future {
        MapIdentityFuture {
            inner: self.verifier.verify(credential),
            map: Some(self.map.clone()),
        }
    }

    fn verify_now(&self, credential: Credential) -> Verification<Self::Future, I2> {
        match self.verifier.verify_now(credential) {
            Verification::Ready(outcome) => Verification::Ready(mapped(outcome, &self.map)),
            Verification::Pending(inner) => Verification::Pending(MapIdentityFuture {
                inner,
                map: Some(self.map.clone()),
            }),
        }
    }
}

pin_project! {
    /// The future of a [`MapIdentity`] verifier.
    pub struct MapIdentityFuture<Fut, F> {
        #[pin]
        inner: Fut,
        map: Option<F>,
    }
}

impl<Fut, F> fmt::Debug for MapIdentityFuture<Fut, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapIdentityFuture").finish_non_exhaustive()
    }
}

impl<Fut, F, I, I2> Future for MapIdentityFuture<Fut, F>
where
    Fut: Future<Output = Result<Verified<I>, AuthError>>,
    F: Fn(I) -> I2,
{
    type Output = Result<Verified<I2>, AuthError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = std::task::ready!(this.inner.poll(cx));
        Poll::Ready(match this.map.take() {
            Some(map) => mapped(outcome, &map),
            None => Err(AuthError::new(AuthErrorKind::Invalid)
                .with_detail("verification polled after completion")),
        })
    }
}
