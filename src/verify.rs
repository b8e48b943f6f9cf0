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

use std::future::Future;
use std::time::SystemTime;

use crate::credential::Credential;
use crate::error::AuthError;

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

impl<I: Subject> Subject for crate::layer::Authenticated<I> {
    fn subject(&self) -> &str {
        self.identity.subject()
    }
}
