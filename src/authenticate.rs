//! Pairs of a credential source and its verifier, composed in order.
//!
//! [`WsAuthLayer::new(source, verifier)`](crate::WsAuthLayer::new) builds a
//! [`Scheme`]; [`WsAuthLayer::or`](crate::WsAuthLayer::or) chains another one
//! with [`Or`]. The first scheme whose source finds a credential verifies it;
//! the credentials of the others are still removed from the request. All
//! schemes of one layer produce the same identity type.
//!
//! ```
//! use std::future::{ready, Ready};
//! use http::Request;
//! use tower_ws_auth::authenticate::{Authenticate, Or, Scheme};
//! use tower_ws_auth::source::{Bearer, Query};
//! use tower_ws_auth::{AuthError, AuthErrorKind, Credential, SourceKind, Verified};
//!
//! fn known(c: Credential) -> Ready<Result<Verified<String>, AuthError>> {
//!     ready(if c.ct_eq("good") { Ok(Verified::new("alice".into())) } else { Err(AuthErrorKind::Invalid.into()) })
//! }
//! let schemes = Or::new(Scheme::new(Bearer, known), Scheme::new(Query::param("ticket"), known));
//!
//! let (mut parts, ()) = Request::get("/ws?ticket=good").body(()).unwrap().into_parts();
//! let (via, _verification) = schemes.authenticate(&mut parts).unwrap().unwrap();
//! assert_eq!(via, SourceKind::Query);
//!
//! let (mut parts, ()) = Request::get("/ws").body(()).unwrap().into_parts();
//! assert!(schemes.authenticate(&mut parts).unwrap().is_none());
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::request::Parts;
use pin_project_lite::pin_project;

use crate::credential::{Credential, SourceKind};
use crate::error::AuthError;
use crate::source::CredentialSource;
use crate::verify::{Verification, Verified, Verifier};

/// Finds a credential on a request head and starts verifying it.
///
/// Authentication runs in two steps so that nothing is spent on a request that
/// is refused anyway: [`find`](Self::find) reads every source (removing every
/// configured credential, refusing duplicates and malformed values), and only
/// then [`verify`](Self::verify) runs, once. A one-time ticket is therefore
/// never redeemed by a request that a later source would have refused.
pub trait Authenticate {
    /// The verified identity.
    type Identity: Clone + Send + Sync + 'static;
    /// The verification in progress.
    type Future: Future<Output = Result<Verified<Self::Identity>, AuthError>>;
    /// Which scheme found the credential: `()` for a [`Scheme`], a
    /// [`Branch`] for an [`Or`].
    type Found;

    /// Extract the credential (removing every configured credential from
    /// `parts`) without verifying it. `Ok(None)`: no credential at all.
    ///
    /// # Errors
    ///
    /// Whatever the sources report: ambiguous, oversize, malformed, or a present
    /// but empty credential.
    fn find(&self, parts: &mut Parts) -> Result<Option<(Self::Found, Credential)>, AuthError>;

    /// Start verifying a credential that [`find`](Self::find) returned.
    fn verify(
        &self,
        found: Self::Found,
        credential: Credential,
    ) -> Verification<Self::Future, Self::Identity>;

    /// [`find`](Self::find), then [`verify`](Self::verify) what was found.
    ///
    /// # Errors
    ///
    /// As [`find`](Self::find).
    #[allow(clippy::type_complexity)]
    fn authenticate(
        &self,
        parts: &mut Parts,
    ) -> Result<Option<(SourceKind, Verification<Self::Future, Self::Identity>)>, AuthError> {
        Ok(self.find(parts)?.map(|(found, credential)| {
            let via = credential.via();
            (via, self.verify(found, credential))
        }))
    }

    /// Remove every configured credential from `parts`.
    ///
    /// # Errors
    ///
    /// When the request cannot be rebuilt without them.
    fn strip(&self, parts: &mut Parts) -> Result<(), AuthError>;

    /// Whether any source reads cookies.
    fn uses_cookies(&self) -> bool;

    /// Call `visit` with every query parameter name read by a source.
    fn visit_query_params(&self, visit: &mut dyn FnMut(&str));

    /// The subject of a verified identity, for logs, when a verifier knows it
    /// (JWT claims, tickets); never a secret.
    fn subject_of<'a>(&self, identity: &'a Self::Identity) -> Option<&'a str>;

    /// Call `visit` for every source in the order they are tried, with whether
    /// it reads an ambient credential (a cookie, which the browser attaches
    /// by itself) rather than an explicit one.
    fn visit_sources(&self, visit: &mut dyn FnMut(bool));
}

/// One credential source and the verifier for what it finds.
#[derive(Clone, Debug)]
pub struct Scheme<S, V> {
    source: S,
    verifier: V,
}

impl<S, V> Scheme<S, V> {
    /// Verify what `source` finds with `verifier`.
    pub fn new(source: S, verifier: V) -> Self {
        Self { source, verifier }
    }
}

impl<S, V> Authenticate for Scheme<S, V>
where
    S: CredentialSource,
    V: Verifier,
{
    type Identity = V::Identity;
    type Future = V::Future;
    type Found = ();

    fn find(&self, parts: &mut Parts) -> Result<Option<((), Credential)>, AuthError> {
        Ok(self
            .source
            .extract(parts)?
            .map(|credential| ((), credential)))
    }

    fn verify(&self, (): (), credential: Credential) -> Verification<V::Future, V::Identity> {
        self.verifier.verify_now(credential)
    }

    fn strip(&self, parts: &mut Parts) -> Result<(), AuthError> {
        self.source.strip(parts)
    }

    fn uses_cookies(&self) -> bool {
        self.source.uses_cookies()
    }

    fn visit_query_params(&self, visit: &mut dyn FnMut(&str)) {
        self.source.visit_query_params(visit);
    }

    fn visit_sources(&self, visit: &mut dyn FnMut(bool)) {
        self.source.visit_sources(visit);
    }

    fn subject_of<'a>(&self, identity: &'a V::Identity) -> Option<&'a str> {
        self.verifier.subject_of(identity)
    }
}

/// `A`, and `B` when `A` finds no credential.
#[derive(Clone, Debug)]
pub struct Or<A, B> {
    first: A,
    second: B,
}

impl<A, B> Or<A, B> {
    /// Try `first`, then `second`.
    pub fn new(first: A, second: B) -> Self {
        Self { first, second }
    }
}

impl<A, B> Authenticate for Or<A, B>
where
    A: Authenticate,
    B: Authenticate<Identity = A::Identity>,
{
    type Identity = A::Identity;
    type Future = OrFuture<A::Future, B::Future>;
    type Found = Branch<A::Found, B::Found>;

    fn find(&self, parts: &mut Parts) -> Result<Option<(Self::Found, Credential)>, AuthError> {
        if let Some((found, credential)) = self.first.find(parts)? {
            // The later sources' credentials go too, and a malformed one
            // refuses the request before anything is verified.
            self.second.strip(parts)?;
            return Ok(Some((Branch::First(found), credential)));
        }
        Ok(self
            .second
            .find(parts)?
            .map(|(found, credential)| (Branch::Second(found), credential)))
    }

    fn verify(
        &self,
        found: Self::Found,
        credential: Credential,
    ) -> Verification<Self::Future, Self::Identity> {
        match found {
            Branch::First(found) => {
                map_pending(self.first.verify(found, credential), OrFuture::first)
            }
            Branch::Second(found) => {
                map_pending(self.second.verify(found, credential), OrFuture::second)
            }
        }
    }

    fn strip(&self, parts: &mut Parts) -> Result<(), AuthError> {
        self.first.strip(parts)?;
        self.second.strip(parts)
    }

    fn uses_cookies(&self) -> bool {
        self.first.uses_cookies() || self.second.uses_cookies()
    }

    fn visit_query_params(&self, visit: &mut dyn FnMut(&str)) {
        self.first.visit_query_params(visit);
        self.second.visit_query_params(visit);
    }

    fn visit_sources(&self, visit: &mut dyn FnMut(bool)) {
        self.first.visit_sources(visit);
        self.second.visit_sources(visit);
    }

    fn subject_of<'a>(&self, identity: &'a A::Identity) -> Option<&'a str> {
        self.first
            .subject_of(identity)
            .or_else(|| self.second.subject_of(identity))
    }
}

/// Which side of an [`Or`] found the credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Branch<A, B> {
    /// The first scheme.
    First(A),
    /// The second scheme.
    Second(B),
}

fn map_pending<F, G, I>(
    verification: Verification<F, I>,
    wrap: impl FnOnce(F) -> G,
) -> Verification<G, I> {
    match verification {
        Verification::Ready(outcome) => Verification::Ready(outcome),
        Verification::Pending(future) => Verification::Pending(wrap(future)),
    }
}

pin_project! {
    /// The verification future of an [`Or`].
    pub struct OrFuture<A, B> {
        #[pin]
        inner: Either<A, B>,
    }
}

pin_project! {
    #[project = EitherProj]
    enum Either<A, B> {
        First { #[pin] fut: A },
        Second { #[pin] fut: B },
    }
}

impl<A, B> OrFuture<A, B> {
    fn first(fut: A) -> Self {
        Self {
            inner: Either::First { fut },
        }
    }

    fn second(fut: B) -> Self {
        Self {
            inner: Either::Second { fut },
        }
    }
}

impl<A, B> fmt::Debug for OrFuture<A, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrFuture").finish_non_exhaustive()
    }
}

impl<A, B, T> Future for OrFuture<A, B>
where
    A: Future<Output = T>,
    B: Future<Output = T>,
{
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.project().inner.project() {
            EitherProj::First { fut } => fut.poll(cx),
            EitherProj::Second { fut } => fut.poll(cx),
        }
    }
}
