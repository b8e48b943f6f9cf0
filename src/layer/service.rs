use std::fmt;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use super::{is_websocket_upgrade, Authenticated};
use crate::authenticate::Authenticate;
use crate::credential::SourceKind;
use crate::error::{AuthError, AuthErrorKind};
use crate::metrics;
use crate::origin::OriginPolicy;
use crate::rejection::OnRejection;
use crate::verify::{Verification, Verified};
use tracing::field::Empty;
use tracing::Span;

pub(crate) struct Shared<A, R> {
    pub(crate) auth: A,
    /// Whether a source reads the query, so copies of the URI need stripping.
    pub(crate) reads_query: bool,
    pub(crate) origin: OriginPolicy,
    pub(crate) optional: bool,
    pub(crate) all_requests: bool,
    pub(crate) rejection: R,
}

impl<A, R> Shared<A, R> {
    /// Refuse: log, count, and answer with the configured responder.
    pub(crate) fn reject<B>(&self, span: &Span, error: AuthError) -> Response<B>
    where
        R: OnRejection<B>,
    {
        let via = error.via().map(|v| v.as_str());
        span.record("outcome", "refused");
        span.record("reason", error.kind().as_str());
        if let Some(via) = via {
            span.record("via", via);
        }
        if error.kind() == AuthErrorKind::Unavailable {
            tracing::warn!(parent: span, reason = %error.kind(), via, error = ?error, "websocket authentication backend unavailable");
        } else {
            tracing::info!(parent: span, reason = %error.kind(), via, "websocket authentication refused");
        }
        metrics::upgrade(error.via(), Some(error.kind()));
        self.rejection.on_rejection(error)
    }

    /// Put the verified identity where the handler finds it; log and count.
    pub(crate) fn accept<B>(
        &self,
        span: &Span,
        request: &mut Request<B>,
        verified: Verified<A::Identity>,
        via: SourceKind,
    ) where
        A: Authenticate,
    {
        // Nothing to record, and the header is not read again, when nobody
        // listens.
        if !span.is_disabled() {
            span.record("outcome", "accepted");
            span.record("via", via.as_str());
            if let Some(subject) = self.auth.subject_of(&verified.identity) {
                span.record("subject", subject);
            }
            if is_websocket_upgrade(request) {
                tracing::debug!(parent: span, "websocket upgrade authenticated");
            } else {
                tracing::debug!(parent: span, "request authenticated");
            }
        }
        metrics::upgrade(Some(via), None);
        request.extensions_mut().insert(Authenticated {
            identity: verified.identity,
            via,
            expires_at: verified.expires_at,
        });
    }
}

/// One span per request the layer authenticates, with where the credential
/// came from, whose it is and what became of it; never the credential.
fn auth_span(upgrade: bool) -> Span {
    tracing::info_span!(
        "ws_auth",
        upgrade,
        via = Empty,
        subject = Empty,
        outcome = Empty,
        reason = Empty,
    )
}

/// Remove the credentials from the copies of the URI that a framework keeps
/// in the extensions: axum's `OriginalUri`, which it records before any
/// route layer runs (and keeps whole across nested routers).
#[allow(unused_variables)]
fn strip_uri_copies<A: Authenticate>(auth: &A, parts: &mut http::request::Parts) {
    #[cfg(feature = "axum")]
    if let Some(original) = parts.extensions.get_mut::<axum::extract::OriginalUri>() {
        if original.0.query().is_some() {
            let (mut copy, ()) = Request::new(()).into_parts();
            copy.uri = std::mem::take(&mut original.0);
            // A copy that cannot be rebuilt is replaced by the stripped URI.
            original.0 = match auth.strip(&mut copy) {
                Ok(()) => copy.uri,
                Err(_) => parts.uri.clone(),
            };
        }
    }
}

/// Authenticates WebSocket upgrade requests before they reach `S`.
///
/// Built by [`WsAuthLayer`](crate::WsAuthLayer). On success the inner service
/// receives the same request (extensions, including hyper's upgrade handle,
/// intact) with the credential removed and an
/// [`Authenticated`](crate::Authenticated) in its extensions.
pub struct WsAuth<S, A, R> {
    inner: S,
    shared: Arc<Shared<A, R>>,
}

impl<S, A, R> WsAuth<S, A, R> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<A, R>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, A, R> Clone for WsAuth<S, A, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, A, R> fmt::Debug for WsAuth<S, A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsAuth")
            .field("inner", &self.inner)
            .field("origin", &self.shared.origin)
            .field("optional", &self.shared.optional)
            .finish_non_exhaustive()
    }
}

impl<S, A, R, ReqBody, ResBody> Service<Request<ReqBody>> for WsAuth<S, A, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    A: Authenticate,
    R: OnRejection<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, A, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let upgrade = is_websocket_upgrade(&req);
        if !shared.all_requests && !upgrade {
            return ResponseFuture::call(self.inner.call(req));
        }
        let span = auth_span(upgrade);
        let (mut parts, body) = req.into_parts();
        if !shared.origin.is_any() {
            if let Err(error) = shared.origin.check(&parts) {
                return ResponseFuture::reject(shared.reject(&span, error));
            }
        }
        let found = shared.auth.authenticate(&mut parts);
        if shared.reads_query && found.is_ok() {
            strip_uri_copies(&shared.auth, &mut parts);
        }
        match found {
            Err(error) => ResponseFuture::reject(shared.reject(&span, error)),
            Ok(None) if shared.optional => {
                // A stray `Authenticated` set by a client-facing layer must not
                // survive an anonymous pass.
                parts.extensions.remove::<Authenticated<A::Identity>>();
                span.record("outcome", "anonymous");
                tracing::debug!(parent: &span, "continues anonymous");
                metrics::upgrade(None, None);
                ResponseFuture::call(self.inner.call(Request::from_parts(parts, body)))
            }
            Ok(None) => {
                ResponseFuture::reject(shared.reject(&span, AuthError::new(AuthErrorKind::Missing)))
            }
            // Decided at once (JWTs, in-memory tickets): straight on to the
            // inner service, which `poll_ready` has made ready.
            Ok(Some((via, Verification::Ready(Ok(verified))))) => {
                let mut request = Request::from_parts(parts, body);
                shared.accept(&span, &mut request, verified, via);
                ResponseFuture::call(self.inner.call(request))
            }
            Ok(Some((via, Verification::Ready(Err(error))))) => {
                ResponseFuture::reject(shared.reject(&span, error.with_via(via)))
            }
            Ok(Some((via, Verification::Pending(verification)))) => {
                // The ready service moves into the future; a fresh clone stays
                // here to be driven to readiness next time.
                let clone = self.inner.clone();
                let inner = mem::replace(&mut self.inner, clone);
                ResponseFuture::verify(
                    verification,
                    Request::from_parts(parts, body),
                    inner,
                    via,
                    Arc::clone(shared),
                    span,
                )
            }
        }
    }
}
