use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Extensions, Request, Response, StatusCode};
use tower_service::Service;

use super::{TicketStore, DEFAULT_TICKET_TTL};
use crate::error::{AuthError, AuthErrorKind};
use crate::layer::Authenticated;
use crate::verify::Verified;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The ticket-issuing endpoint, as a tower service and an axum handler.
///
/// It reads the identity that the app's existing HTTP authentication put in
/// the request extensions — an [`Authenticated<I>`](crate::Authenticated) (from
/// [`WsAuthLayer`](crate::WsAuthLayer) with
/// [`all_requests`](crate::WsAuthLayer::all_requests)), or a plain `I` inserted
/// by another layer such as tower-http's `AsyncRequireAuthorizationLayer` — and
/// answers:
///
/// | outcome | response |
/// |---|---|
/// | issued | 200 `{"ticket":"…","expires_in":30}` |
/// | no identity in the extensions | 401, `WWW-Authenticate: Bearer` |
/// | the credential has expired | 401 `invalid_token` |
/// | too many outstanding tickets | 429 |
/// | store unreachable | 503 |
///
/// Every response carries `Cache-Control: no-store`.
///
/// ```
/// use http::{Request, StatusCode};
/// use tower::ServiceExt;
/// use tower_ws_auth::ticket::{MemoryTicketStore, TicketEndpoint};
/// use tower_ws_auth::{Authenticated, SourceKind};
///
/// let endpoint = TicketEndpoint::new(MemoryTicketStore::<String>::new());
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut request = Request::post("/ws-ticket").body(()).unwrap();
/// request.extensions_mut().insert(Authenticated {
///     identity: "alice".to_owned(),
///     via: SourceKind::Header,
///     expires_at: None,
/// });
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
pub struct TicketEndpoint<St> {
    store: St,
    ttl: Duration,
}

impl<St: Clone> Clone for TicketEndpoint<St> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            ttl: self.ttl,
        }
    }
}

impl<St: fmt::Debug> fmt::Debug for TicketEndpoint<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketEndpoint")
            .field("store", &self.store)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl<St> TicketEndpoint<St>
where
    St: TicketStore + Clone + Send + Sync + 'static,
    St::IssueFuture: Send,
{
    /// Issue tickets from `store`, living [`DEFAULT_TICKET_TTL`] (30 s).
    pub fn new(store: St) -> Self {
        Self {
            store,
            ttl: DEFAULT_TICKET_TTL,
        }
    }

    /// Ticket lifetime (30–60 s is the usual range).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Answer a request whose extensions are `extensions`.
    pub fn respond(&self, extensions: &Extensions) -> BoxFuture<Response<String>> {
        let verified = if let Some(auth) = extensions.get::<Authenticated<St::Identity>>() {
            Some(Verified {
                identity: auth.identity.clone(),
                expires_at: auth.expires_at,
            })
        } else {
            extensions.get::<St::Identity>().cloned().map(Verified::new)
        };
        let Some(verified) = verified else {
            return Box::pin(std::future::ready(error_response(&AuthError::new(
                AuthErrorKind::Missing,
            ))));
        };
        let issuing = self.store.issue(verified, self.ttl);
        Box::pin(async move {
            match issuing.await {
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

impl<St, B> Service<Request<B>> for TicketEndpoint<St>
where
    St: TicketStore + Clone + Send + Sync + 'static,
    St::IssueFuture: Send,
{
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let response = self.respond(req.extensions());
        Box::pin(async move { Ok(response.await) })
    }
}

#[cfg(feature = "axum")]
impl<St, S> axum::handler::Handler<(), S> for TicketEndpoint<St>
where
    St: TicketStore + Clone + Send + Sync + 'static,
    St::IssueFuture: Send,
{
    type Future = Pin<Box<dyn Future<Output = axum::response::Response> + Send>>;

    fn call(self, req: axum::extract::Request, _state: S) -> Self::Future {
        let response = self.respond(req.extensions());
        Box::pin(async move { response.await.map(axum::body::Body::from) })
    }
}
