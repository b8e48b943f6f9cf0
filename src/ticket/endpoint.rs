use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use tower_service::Service;

use super::{TicketStore, DEFAULT_TICKET_TTL};
use crate::error::{AuthError, AuthErrorKind};
use crate::layer::Authenticated;
use crate::verify::Verified;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Finds out who is asking for a ticket, and until when their credential is
/// good: the hook through which [`TicketEndpoint`] sits behind whatever HTTP
/// authentication the app already has.
///
/// Implemented by [`FromExtensions`] (the default) and by every closure
/// `Fn(&Parts) -> Fut` whose future resolves to `Option<Verified<I>>`
/// (`None`: nobody is authenticated, 401). Return the credential's expiry in
/// [`Verified::expires_at`]: the ticket, and the socket it opens, never
/// outlive it.
pub trait IdentifyCaller<I> {
    /// The identity of the request whose head is `parts`.
    fn identify(&self, parts: &Parts) -> BoxFuture<Option<Verified<I>>>;
}

/// Reads the caller's identity from the request extensions: an
/// [`Authenticated<I>`] (from [`WsAuthLayer`](crate::WsAuthLayer) with
/// [`all_requests`](crate::WsAuthLayer::all_requests)) or a
/// [`Verified<I>`] inserted by another layer (e.g. tower-http's
/// `AsyncRequireAuthorizationLayer`), each with its credential's expiry.
///
/// A bare `I` is not read: it says nothing of when its credential expires,
/// and a ticket bought with a 2-second token must not open a socket that
/// lives forever. Insert a `Verified<I>` instead, or identify the caller with
/// a closure ([`TicketEndpoint::identify`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct FromExtensions;

impl<I: Clone + Send + Sync + 'static> IdentifyCaller<I> for FromExtensions {
    fn identify(&self, parts: &Parts) -> BoxFuture<Option<Verified<I>>> {
        let extensions = &parts.extensions;
        let verified = if let Some(auth) = extensions.get::<Authenticated<I>>() {
            Some(Verified {
                identity: auth.identity.clone(),
                expires_at: auth.expires_at,
            })
        } else if let Some(verified) = extensions.get::<Verified<I>>() {
            Some(verified.clone())
        } else {
            if extensions.get::<I>().is_some() {
                tracing::warn!(
                    "the ticket endpoint found a bare identity without its credential's expiry; \
                     insert a Verified<I> or use TicketEndpoint::identify"
                );
            }
            None
        };
        Box::pin(std::future::ready(verified))
    }
}

impl<I, F, Fut> IdentifyCaller<I> for F
where
    F: Fn(&Parts) -> Fut,
    Fut: Future<Output = Option<Verified<I>>> + Send + 'static,
{
    fn identify(&self, parts: &Parts) -> BoxFuture<Option<Verified<I>>> {
        Box::pin(self(parts))
    }
}

/// The ticket-issuing endpoint, as a tower service and an axum handler.
///
/// It finds the caller through an [`IdentifyCaller`]: by default
/// [`FromExtensions`], which reads what the app's existing HTTP authentication
/// put in the request extensions; or any closure over the request head
/// ([`identify`](Self::identify)), for a session store such as
/// `tower-sessions` or another auth crate. It answers:
///
/// | outcome | response |
/// |---|---|
/// | issued | 200 `{"ticket":"…","expires_in":30}` |
/// | nobody authenticated | 401, `WWW-Authenticate: Bearer` |
/// | the credential has expired | 401 `invalid_token` |
/// | too many outstanding tickets for this identity | 429 |
/// | store unreachable | 503 |
///
/// Every response carries `Cache-Control: no-store`. The ticket lives
/// [`DEFAULT_TICKET_TTL`] at most and never past the credential's expiry, and
/// redeeming it yields that expiry, so a
/// [`LifetimeGuard`](crate::first_message::LifetimeGuard) closes the socket
/// when the credential that bought the ticket would have expired.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::{Request, StatusCode};
/// use tower::ServiceExt;
/// use tower_ws_auth::ticket::{MemoryTicketStore, TicketEndpoint};
/// use tower_ws_auth::Verified;
///
/// let endpoint = TicketEndpoint::new(MemoryTicketStore::<String>::new());
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let in_a_minute = SystemTime::now() + Duration::from_secs(60);
/// let mut request = Request::post("/ws-ticket").body(()).unwrap();
/// request.extensions_mut().insert(Verified::new("alice".to_owned()).expires_at(in_a_minute));
/// let response = endpoint.clone().oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// assert_eq!(response.headers()["cache-control"], "no-store");
/// assert!(response.body().contains(r#""expires_in":30"#));
///
/// let anonymous = Request::post("/ws-ticket").body(()).unwrap();
/// let response = endpoint.oneshot(anonymous).await.unwrap();
/// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
/// # });
/// ```
///
/// Behind any other authentication, a closure over the request head:
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::request::Parts;
/// use http::{Request, StatusCode};
/// use tower::ServiceExt;
/// use tower_ws_auth::ticket::{MemoryTicketStore, TicketEndpoint};
/// use tower_ws_auth::Verified;
///
/// #[derive(Clone)]
/// struct SessionUser { name: String, session_ends: SystemTime }
///
/// let endpoint = TicketEndpoint::new(MemoryTicketStore::<String>::new())
///     .identify(|parts: &Parts| {
///         let user = parts.extensions.get::<SessionUser>().cloned();
///         async move { user.map(|u| Verified::new(u.name).expires_at(u.session_ends)) }
///     });
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut request = Request::post("/ws-ticket").body(()).unwrap();
/// request.extensions_mut().insert(SessionUser {
///     name: "alice".into(),
///     session_ends: SystemTime::now() + Duration::from_secs(600),
/// });
/// assert_eq!(endpoint.clone().oneshot(request).await.unwrap().status(), StatusCode::OK);
/// let anonymous = Request::post("/ws-ticket").body(()).unwrap();
/// assert_eq!(endpoint.oneshot(anonymous).await.unwrap().status(), StatusCode::UNAUTHORIZED);
/// # });
/// ```
pub struct TicketEndpoint<St, F = FromExtensions> {
    store: St,
    ttl: Duration,
    identify: F,
}

impl<St: Clone, F: Clone> Clone for TicketEndpoint<St, F> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            ttl: self.ttl,
            identify: self.identify.clone(),
        }
    }
}

impl<St: fmt::Debug, F> fmt::Debug for TicketEndpoint<St, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketEndpoint")
            .field("store", &self.store)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<St> TicketEndpoint<St, FromExtensions> {
    /// Issue tickets from `store`, living [`DEFAULT_TICKET_TTL`] (30 s), to
    /// the identity found by [`FromExtensions`].
    pub fn new(store: St) -> Self {
        Self {
            store,
            ttl: DEFAULT_TICKET_TTL,
            identify: FromExtensions,
        }
    }
}

impl<St, F> TicketEndpoint<St, F> {
    /// Ticket lifetime (30–60 s is the usual range).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Find the caller with `identify` instead: a closure over the request
    /// head returning the identity and its credential's expiry, or `None`.
    pub fn identify<F2>(self, identify: F2) -> TicketEndpoint<St, F2> {
        TicketEndpoint {
            store: self.store,
            ttl: self.ttl,
            identify,
        }
    }
}

impl<St, F> TicketEndpoint<St, F>
where
    St: TicketStore + Clone + Send + Sync + 'static,
    St::IssueFuture: Send,
    F: IdentifyCaller<St::Identity>,
{
    /// Answer a request whose head is `parts`.
    pub fn respond(&self, parts: &Parts) -> BoxFuture<Response<String>> {
        let identifying = self.identify.identify(parts);
        let store = self.store.clone();
        let ttl = self.ttl;
        Box::pin(async move {
            let Some(verified) = identifying.await else {
                return error_response(&AuthError::new(AuthErrorKind::Missing));
            };
            match store.issue(verified, ttl).await {
                Ok(issued) => {
                    let secs = issued.expires_in.as_millis().div_ceil(1000);
                    let body = serde_json::json!({
                        "ticket": issued.ticket.expose_secret(),
                        "expires_in": secs,
                    })
                    .to_string();
                    json_response(StatusCode::OK, body)
                }
                Err(error) => {
                    tracing::info!(reason = %error.kind(), "ticket not issued");
                    error_response(&error)
                }
            }
        })
    }
}

fn json_response(status: StatusCode, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error_response(error: &AuthError) -> Response<String> {
    let body = serde_json::json!({ "error": error.body_text() }).to_string();
    let mut response = json_response(error.status(), body);
    if let Some(challenge) = error.www_authenticate() {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    response.extensions_mut().insert(error.clone());
    response
}

impl<St, F, B> Service<Request<B>> for TicketEndpoint<St, F>
where
    St: TicketStore + Clone + Send + Sync + 'static,
    St::IssueFuture: Send,
    F: IdentifyCaller<St::Identity>,
{
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, _body) = req.into_parts();
        let response = self.respond(&parts);
        Box::pin(async move { Ok(response.await) })
    }
}

#[cfg(feature = "axum")]
impl<St, F, S> axum::handler::Handler<(), S> for TicketEndpoint<St, F>
where
    St: TicketStore + Clone + Send + Sync + 'static,
    St::IssueFuture: Send,
    F: IdentifyCaller<St::Identity> + Clone + Send + Sync + 'static,
{
    type Future = Pin<Box<dyn Future<Output = axum::response::Response> + Send>>;

    fn call(self, req: axum::extract::Request, _state: S) -> Self::Future {
        let (parts, _body) = req.into_parts();
        let response = self.respond(&parts);
        Box::pin(async move { response.await.map(axum::body::Body::from) })
    }
}
