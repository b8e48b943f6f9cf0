use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::service::{Shared, WsAuth};
use super::Redactor;
use crate::authenticate::{Authenticate, Or, Scheme};
use crate::origin::OriginPolicy;
use crate::rejection::DefaultRejection;

/// Applies [`WsAuth`] to a service: authenticates WebSocket upgrade requests.
///
/// Built with [`WsAuthLayer::new`] from a credential source and a verifier;
/// further sources chain with [`or`](Self::or). See the [module docs](crate::layer).
#[derive(Clone)]
pub struct WsAuthLayer<A, R = DefaultRejection> {
    auth: A,
    origin: Option<OriginPolicy>,
    optional: bool,
    all_requests: bool,
    rejection: R,
}

impl<S, V> WsAuthLayer<Scheme<S, V>> {
    /// Authenticate upgrades with the credential `source` finds, verified by
    /// `verifier`.
    pub fn new(source: S, verifier: V) -> Self {
        Self {
            auth: Scheme::new(source, verifier),
            origin: None,
            optional: false,
            all_requests: false,
            rejection: DefaultRejection,
        }
    }
}

impl<A, R> WsAuthLayer<A, R> {
    /// When the sources so far find nothing, try `source` with `verifier`. The
    /// verifier must produce the same identity type.
    pub fn or<S, V>(self, source: S, verifier: V) -> WsAuthLayer<Or<A, Scheme<S, V>>, R> {
        WsAuthLayer {
            auth: Or::new(self.auth, Scheme::new(source, verifier)),
            origin: self.origin,
            optional: self.optional,
            all_requests: self.all_requests,
            rejection: self.rejection,
        }
    }

    /// The `Origin` policy. Without this call the layer uses
    /// [`OriginPolicy::same_origin`] when any source reads cookies and
    /// [`OriginPolicy::any`] otherwise.
    #[must_use]
    pub fn origin(mut self, policy: OriginPolicy) -> Self {
        self.origin = Some(policy);
        self
    }

    /// Let requests without any credential through, anonymous: the handler
    /// finds no identity in the extensions. A credential that is present but
    /// bad is still refused.
    #[must_use]
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Authenticate every request, not only WebSocket upgrades (e.g. to protect
    /// a ticket-issuing endpoint with the same bearer token).
    #[must_use]
    pub fn all_requests(mut self) -> Self {
        self.all_requests = true;
        self
    }

    /// Replace the responder for refused requests.
    pub fn on_rejection<R2>(self, rejection: R2) -> WsAuthLayer<A, R2> {
        WsAuthLayer {
            auth: self.auth,
            origin: self.origin,
            optional: self.optional,
            all_requests: self.all_requests,
            rejection,
        }
    }

    /// A [`Redactor`] for the query parameters this layer's sources read, for
    /// logging layers that sit outside this one.
    pub fn redactor(&self) -> Redactor
    where
        A: Authenticate,
    {
        Redactor::for_auth(&self.auth)
    }
}

impl<S, A, R> Layer<S> for WsAuthLayer<A, R>
where
    A: Authenticate + Clone,
    R: Clone,
{
    type Service = WsAuth<S, A, R>;

    fn layer(&self, inner: S) -> Self::Service {
        let origin = match &self.origin {
            Some(policy) => policy.clone(),
            None if self.auth.uses_cookies() => OriginPolicy::same_origin(),
            None => OriginPolicy::any(),
        };
        let mut ambient_first = false;
        let mut seen_ambient = false;
        self.auth.visit_sources(&mut |ambient| {
            ambient_first |= seen_ambient && !ambient;
            seen_ambient |= ambient;
        });
        if ambient_first {
            tracing::warn!(
                "WsAuthLayer tries a cookie before an explicit credential (header, query, \
                 subprotocol): a cookie the browser attached by itself would overrule the \
                 credential the client chose to send; chain the cookie source last"
            );
        }
        let mut reads_query = false;
        self.auth.visit_query_params(&mut |_| reads_query = true);
        if self.auth.uses_cookies() && origin.is_any() {
            tracing::warn!(
                "WsAuthLayer accepts cookies with OriginPolicy::any(): any site can open \
                 an authenticated socket (Cross-Site WebSocket Hijacking)"
            );
        }
        WsAuth::new(
            inner,
            Arc::new(Shared {
                auth: self.auth.clone(),
                reads_query,
                origin,
                optional: self.optional,
                all_requests: self.all_requests,
                rejection: self.rejection.clone(),
            }),
        )
    }
}

impl<A, R> fmt::Debug for WsAuthLayer<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsAuthLayer")
            .field("origin", &self.origin)
            .field("optional", &self.optional)
            .field("all_requests", &self.all_requests)
            .finish_non_exhaustive()
    }
}
