//! The demo application: every pattern of tower-ws-auth behind one router,
//! and the server loop that serves it. `main.rs` runs both; the integration
//! and browser tests build the same router and serve it the same way.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header as JwtHeader};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_ws_auth::first_message::{FirstMessageAuth, JsonAuth, LifetimeGuard};
use tower_ws_auth::jwt::{now_secs, numeric_date, JwtClaims, JwtVerifier};
use tower_ws_auth::revocation::{CheckRevoked, Revocations};
use tower_ws_auth::source::{Bearer, Cookie, CredentialSource, Query, Subprotocol};
use tower_ws_auth::ticket::{MemoryTicketStore, Ticket, TicketEndpoint, TicketStore};
use tower_ws_auth::{
    AuthError, AuthErrorKind, Authenticated, Credential, OriginPolicy, SourceKind, Verification,
    Verified, Verifier, WsAuthLayer,
};
use tracing::Level;

/// Longest login token the demo issues: 15 minutes.
pub const TOKEN_TTL_SECS: u64 = 15 * 60;

/// Most login sessions the demo keeps by default ([`Config::max_sessions`]):
/// at the cap, a login drops the oldest.
pub const MAX_SESSIONS: usize = 10_000;

/// Largest message a socket awaiting first-message auth accepts: 64 KiB.
pub const FIRST_MESSAGE_MAX_LEN: usize = 64 * 1024;

/// Time a client has to send a complete request head; slower connections
/// are dropped, so idle or trickling clients cannot pile up.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the demo needs to start.
pub struct Config {
    /// HS256 secret for login tokens.
    pub jwt_secret: Vec<u8>,
    /// Origins allowed to open sockets.
    pub allowed_origins: Vec<String>,
    /// Redis for tickets; the in-memory store when `None`.
    pub redis_url: Option<String>,
    /// Most login sessions kept at once, [`MAX_SESSIONS`] in `main.rs`.
    pub max_sessions: usize,
}

/// What the demo's tokens and sessions say: who, until when, when they were
/// issued (to the millisecond, so that a logout covers exactly the
/// credentials issued up to it) and which login they belong to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoClaims {
    /// The user.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch with a fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<f64>,
    /// The login this credential belongs to (not the cookie's secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl JwtClaims for DemoClaims {
    fn subject(&self) -> &str {
        &self.sub
    }
    fn expires_at(&self) -> Option<u64> {
        Some(self.exp)
    }
    fn session_id(&self) -> Option<&str> {
        self.sid.as_deref()
    }
    fn issued_at(&self) -> Option<SystemTime> {
        numeric_date(self.iat?)
    }
}

type Sessions = Arc<Mutex<SessionStore>>;

/// Login sessions by cookie value, at most `max` of them.
///
/// Sessions are queued in login order. A login pops expired sessions and,
/// at the cap, the oldest off the front, so it never walks the whole map:
/// each session is popped once. A session that expires before an older
/// one waits behind it (at most the 15-minute token lifetime), and a
/// look-up refuses it meanwhile.
struct SessionStore {
    max: usize,
    by_id: HashMap<String, DemoClaims>,
    /// (expiry, id), oldest login first.
    order: VecDeque<(u64, String)>,
}

impl SessionStore {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            by_id: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn insert(&mut self, id: String, claims: DemoClaims, now: u64) {
        while let Some((exp, _)) = self.order.front() {
            if *exp > now && self.order.len() < self.max {
                break;
            }
            if let Some((_, oldest)) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
        self.order.push_back((claims.exp, id.clone()));
        self.by_id.insert(id, claims);
    }

    fn get(&self, id: &str) -> Option<&DemoClaims> {
        self.by_id.get(id)
    }

    /// Forget a session (its place in the queue goes when it reaches the
    /// front).
    fn remove(&mut self, id: &str) -> Option<DemoClaims> {
        self.by_id.remove(id)
    }
}

#[derive(Clone)]
struct AppState {
    encoding: EncodingKey,
    /// Login tokens, refused once revoked.
    jwt: CheckRevoked<JwtVerifier<DemoClaims>>,
    /// Login tokens as signed, revoked or not: logging out with a token
    /// that is already revoked is harmless, and must work while Redis is
    /// down.
    signed: JwtVerifier<DemoClaims>,
    sessions: Sessions,
    revocations: Revocations,
}

/// Revocations are remembered as long as the longest credential lives.
const REVOCATION_TTL: Duration = Duration::from_secs(TOKEN_TTL_SECS + 60);

/// The demo's router. Must be called within a tokio runtime.
#[allow(dead_code)] // `main.rs` calls `router_with_oidc`
pub fn router(config: Config) -> Result<Router, Box<dyn std::error::Error>> {
    router_with_oidc(config, None)
}

/// An OpenID provider whose access tokens the demo accepts (`OIDC_ISSUER`,
/// `OIDC_AUDIENCE`).
#[cfg_attr(not(feature = "oidc"), allow(dead_code))]
pub struct Oidc {
    /// The issuer URL; its keys are found by discovery.
    pub issuer: String,
    /// The `aud` the provider puts in tokens for the demo.
    pub audience: String,
}

/// The demo's router; with `oidc`, `/ws` (Bearer, subprotocol) and
/// `/ws-ticket` also accept that provider's tokens. Must be called within a
/// tokio runtime.
pub fn router_with_oidc(
    config: Config,
    oidc: Option<Oidc>,
) -> Result<Router, Box<dyn std::error::Error>> {
    let provider = provider_tokens(oidc)?;
    match config.redis_url.as_deref() {
        #[cfg(feature = "redis")]
        Some(url) => {
            let store = tower_ws_auth::ticket::RedisTicketStore::<DemoClaims>::open(url)?;
            let revocations = Revocations::redis(url)?.record_ttl(REVOCATION_TTL);
            build(config, store, revocations, provider)
        }
        #[cfg(not(feature = "redis"))]
        Some(_) => Err("REDIS_URL is set: run the demo with `--features redis`".into()),
        None => build(
            config,
            MemoryTicketStore::<DemoClaims>::new(),
            Revocations::memory().record_ttl(REVOCATION_TTL),
            provider,
        ),
    }
}

#[cfg(feature = "oidc")]
type ProviderTokens = Option<tower_ws_auth::oidc::OidcVerifier<DemoClaims>>;
/// Without the `oidc` feature there is no provider to accept tokens from.
#[cfg(not(feature = "oidc"))]
#[derive(Clone)]
struct ProviderTokens;

fn provider_tokens(oidc: Option<Oidc>) -> Result<ProviderTokens, Box<dyn std::error::Error>> {
    #[cfg(feature = "oidc")]
    {
        let Some(oidc) = oidc else { return Ok(None) };
        let verifier = tower_ws_auth::oidc::OidcVerifier::discover(oidc.issuer)
            .audience(&[oidc.audience])
            .build()?;
        Ok(Some(verifier))
    }
    #[cfg(not(feature = "oidc"))]
    match oidc {
        Some(_) => Err("OIDC_ISSUER is set: run the demo with `--features oidc`".into()),
        None => Ok(ProviderTokens),
    }
}

/// Bearer and subprotocol tokens: the demo's own logins (HS256) and, with
/// `OIDC_ISSUER`, the provider's tokens (signed with its public keys).
#[derive(Clone)]
struct Tokens {
    login: JwtVerifier<DemoClaims>,
    #[cfg_attr(not(feature = "oidc"), allow(dead_code))]
    provider: ProviderTokens,
}

type TokenFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Verified<DemoClaims>, AuthError>> + Send>,
>;

impl Verifier for Tokens {
    type Identity = DemoClaims;
    type Future = TokenFuture;

    fn verify(&self, credential: Credential) -> TokenFuture {
        match self.verify_now(credential) {
            Verification::Ready(result) => Box::pin(std::future::ready(result)),
            Verification::Pending(future) => future,
        }
    }

    fn verify_now(&self, credential: Credential) -> Verification<TokenFuture, DemoClaims> {
        #[cfg(feature = "oidc")]
        if let Some(provider) = &self.provider {
            // The demo signs its logins with HS256: any other algorithm is
            // the provider's.
            let login = jsonwebtoken::decode_header(credential.expose_secret())
                .is_ok_and(|header| header.alg == Algorithm::HS256);
            if !login {
                return match provider.verify_now(credential) {
                    Verification::Ready(result) => Verification::Ready(result),
                    Verification::Pending(future) => Verification::Pending(Box::pin(future)),
                };
            }
        }
        Verification::Ready(self.login.verify_token(credential.expose_secret()))
    }
}

fn build<St>(
    config: Config,
    tickets: St,
    revocations: Revocations,
    provider: ProviderTokens,
) -> Result<Router, Box<dyn std::error::Error>>
where
    St: TicketStore<Identity = DemoClaims> + Clone + Send + Sync + 'static,
    St::IssueFuture: Send,
    St::RedeemFuture: Send + 'static,
{
    // Every verifier refuses revoked credentials (logout).
    let jwt = revocations.enforce(JwtVerifier::<DemoClaims>::hs256(&config.jwt_secret)?);
    let tokens = revocations.enforce(Tokens {
        login: JwtVerifier::<DemoClaims>::hs256(&config.jwt_secret)?,
        provider,
    });
    let origins = OriginPolicy::allow(&config.allowed_origins)?;
    let state = AppState {
        encoding: EncodingKey::from_secret(&config.jwt_secret),
        jwt: jwt.clone(),
        signed: JwtVerifier::<DemoClaims>::hs256(&config.jwt_secret)?,
        sessions: Arc::new(Mutex::new(SessionStore::new(config.max_sessions))),
        revocations: revocations.clone(),
    };

    let sessions = state.sessions.clone();
    let session_lookup = move |credential: Credential| {
        let found = sessions
            .lock()
            .ok()
            .and_then(|s| s.get(credential.expose_secret()).cloned());
        std::future::ready(match found {
            Some(claims) if claims.exp > now_secs() => {
                let expires = UNIX_EPOCH + Duration::from_secs(claims.exp);
                Ok(Verified::new(claims).expires_at(expires))
            }
            Some(_) => Err(AuthError::new(AuthErrorKind::Expired)),
            None => Err(AuthError::new(AuthErrorKind::Invalid)),
        })
    };

    // Explicit credentials before the ambient cookie: the header (native
    // clients), the one-time ticket and the subprotocol token (browsers),
    // then the session cookie, which a browser sends whether or not the page
    // chose it. The first one present decides.
    let ws_auth = WsAuthLayer::new(Bearer, tokens.clone())
        .or(
            Query::param("ticket"),
            revocations.enforce(tickets.verifier()),
        )
        .or(Subprotocol::prefix("bearer."), tokens.clone())
        .or(
            Cookie::named("session"),
            revocations.enforce(session_lookup),
        )
        .origin(origins.clone());
    let redactor = ws_auth.redactor();

    let ticket_auth = WsAuthLayer::new(Bearer, tokens).all_requests();
    let origin_only = middleware::from_fn(move |req: Request, next: Next| {
        let origins = origins.clone();
        async move { check_origin(&origins, req, next).await }
    });

    let app = Router::new()
        .route("/", get(page))
        .route("/login", post(login))
        .route("/logout", post(logout).route_layer(origin_only.clone()))
        .route(
            "/ws-ticket",
            post(TicketEndpoint::new(tickets)).route_layer(ticket_auth),
        )
        // CONNECT too: an HTTP/2 WebSocket is an extended CONNECT (RFC 8441).
        .route("/ws", get(ws).connect(ws).route_layer(ws_auth))
        .route(
            "/ws/first-message",
            get(first_message)
                .connect(first_message)
                .route_layer(origin_only),
        )
        .with_state(state)
        .layer(
            // Outside the auth layers, so it sees the URI before the ticket
            // is stripped: the redactor keeps the ticket out of the log.
            TraceLayer::new_for_http()
                .make_span_with(move |req: &Request| {
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        uri = %redactor.uri(req.uri()),
                    )
                })
                .on_request(|_: &Request, _: &tracing::Span| {
                    tracing::info!("started");
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        );
    Ok(app)
}

async fn page() -> impl IntoResponse {
    Html(include_str!("page.html"))
}

#[derive(Deserialize)]
struct Login {
    user: String,
    /// Token lifetime in seconds (1 to 900, default 900), to try expiry.
    ttl_secs: Option<u64>,
}

async fn login(
    State(state): State<AppState>,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(login)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "expected {\"user\": \"name\"}"})),
        )
            .into_response();
    };
    let valid_user = !login.user.is_empty()
        && login.user.len() <= 64
        && login
            .user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_user {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "user must be 1-64 characters of [A-Za-z0-9_-]"})),
        )
            .into_response();
    }
    let ttl = login
        .ttl_secs
        .unwrap_or(TOKEN_TTL_SECS)
        .clamp(1, TOKEN_TTL_SECS);
    let Ok(sid) = Ticket::generate() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let issued = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let claims = DemoClaims {
        sub: login.user,
        exp: issued.as_secs() + ttl,
        // Milliseconds: a logout covers exactly what was issued up to it.
        iat: Some(issued.as_millis() as f64 / 1000.0),
        sid: Some(sid.expose_secret()[..16].to_owned()),
    };
    let Ok(token) = encode(&JwtHeader::new(Algorithm::HS256), &claims, &state.encoding) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(session) = Ticket::generate() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let session = session.expose_secret().to_owned();
    if let Ok(mut sessions) = state.sessions.lock() {
        sessions.insert(session.clone(), claims, now_secs());
    }
    let cookie = format!("session={session}; HttpOnly; SameSite=Lax; Path=/");
    let mut response = Json(json!({ "token": token })).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn via_label(via: SourceKind) -> &'static str {
    match via {
        SourceKind::Query => "ticket",
        other => other.as_str(),
    }
}

/// `POST /logout`: with a bearer token, log its user out everywhere (every
/// credential issued up to now); else with the session cookie, end that
/// session. Open sockets of what was revoked close with 4003.
async fn logout(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    // The credentials read exactly as `/ws` reads them.
    let outcome = match Bearer.extract(&mut parts) {
        Ok(Some(token)) => match state.signed.verify_token(token.expose_secret()) {
            Ok(verified) => {
                state
                    .revocations
                    .revoke_subject(&verified.identity.sub)
                    .await
            }
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
        Ok(None) => match Cookie::named("session").extract(&mut parts) {
            Ok(Some(session)) => {
                let claims = state
                    .sessions
                    .lock()
                    .ok()
                    .and_then(|s| s.get(session.expose_secret()).cloned());
                match claims.and_then(|c| c.sid) {
                    Some(sid) => {
                        let revoked = state.revocations.revoke_session(&sid).await;
                        // Forgotten only once revoked everywhere: a logout
                        // that failed (Redis down) can be tried again.
                        if revoked.is_ok() {
                            if let Ok(mut sessions) = state.sessions.lock() {
                                sessions.remove(session.expose_secret());
                            }
                        }
                        revoked
                    }
                    None => Err(AuthError::new(AuthErrorKind::Invalid)),
                }
            }
            Ok(None) => Err(AuthError::new(AuthErrorKind::Missing)),
            Err(error) => Err(error),
        },
    };
    match outcome {
        Ok(()) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_static("session=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"),
            );
            response
        }
        Err(error) => {
            let mut response = (error.status(), error.body_text()).into_response();
            if let Some(challenge) = error.www_authenticate() {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            response
        }
    }
}

async fn ws(
    upgrade: WebSocketUpgrade,
    State(state): State<AppState>,
    auth: Authenticated<DemoClaims>,
) -> Response {
    // Every message is bounded, not only the first ones: 64 KiB here too.
    upgrade
        .max_message_size(FIRST_MESSAGE_MAX_LEN)
        .max_frame_size(FIRST_MESSAGE_MAX_LEN)
        .protocols(["chat"])
        .on_upgrade(move |socket: WebSocket| async move {
            let welcome = json!({
                "type": "welcome",
                "user": auth.identity.sub,
                "via": via_label(auth.via),
            });
            // Closes at expiry (4002) and on logout (4003).
            let watch = state.revocations.watch(&auth.identity);
            let mut socket =
                LifetimeGuard::new(socket, &auth.identity, auth.expires_at, state.jwt, JsonAuth)
                    .revocation(watch);
            if socket
                .send(Message::text(welcome.to_string()))
                .await
                .is_ok()
            {
                echo(socket).await;
            }
        })
}

async fn first_message(upgrade: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    // The socket's own caps stop a large message before it is buffered whole;
    // the auth's cap then checks the message that arrived.
    let upgrade = upgrade
        .max_message_size(FIRST_MESSAGE_MAX_LEN)
        .max_frame_size(FIRST_MESSAGE_MAX_LEN);
    upgrade.on_upgrade(move |socket: WebSocket| async move {
        let auth = FirstMessageAuth::json().max_len(FIRST_MESSAGE_MAX_LEN);
        if let Ok((verified, socket)) = auth.authenticate(socket, &state.jwt).await {
            let watch = state.revocations.watch(&verified.identity);
            let guard = LifetimeGuard::new(
                socket,
                &verified.identity,
                verified.expires_at,
                state.jwt,
                JsonAuth,
            )
            .revocation(watch);
            echo(guard).await;
        }
    })
}

/// Echo every text message until the socket ends.
async fn echo<S, E>(mut socket: S)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
{
    // Other frames are skipped; after a close frame the library answers it
    // and then ends the stream.
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Text(text) = message {
            if socket.send(Message::Text(text)).await.is_err() {
                break;
            }
        }
    }
}

async fn check_origin(origins: &OriginPolicy, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(error) = origins.check(&parts) {
        tracing::info!(reason = %error.kind(), "websocket authentication refused");
        return (error.status(), error.body_text()).into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Serve `router` on `listener`: HTTP/1.1 (with upgrades) and HTTP/2 (with
/// extended CONNECT, RFC 8441) on the same port. A connection whose request
/// head is not complete within `header_read_timeout` is dropped: the first
/// request's (HTTP/1.1 or HTTP/2) and every later HTTP/1.1 request's.
/// Runs until the task is dropped; a failed accept or connection is logged
/// and the server carries on.
pub async fn serve(listener: TcpListener, router: Router, header_read_timeout: Duration) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of file descriptors, most likely: wait for some to close
                // rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        tokio::spawn(serve_connection(
            stream,
            router.clone(),
            header_read_timeout,
        ));
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection(stream: TcpStream, router: Router, header_read_timeout: Duration) {
    let _ = stream.set_nodelay(true);
    let first_request = Arc::new(AtomicBool::new(false));
    let service = {
        let first_request = first_request.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            first_request.store(true, Ordering::Release);
            router.clone().oneshot(request)
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().enable_connect_protocol();
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);

    // hyper times out HTTP/1.1 request heads, but not the wait for the first
    // bytes that tell HTTP/1.1 from HTTP/2, nor an HTTP/2 client that never
    // sends a request: until the first request arrives, the same deadline
    // covers the whole connection.
    let finished = tokio::select! {
        finished = connection.as_mut() => Some(finished),
        () = tokio::time::sleep(header_read_timeout) => None,
    };
    let finished = match finished {
        Some(finished) => finished,
        None if first_request.load(Ordering::Acquire) => connection.await,
        // Dropping the connection closes the socket.
        None => return,
    };
    if let Err(error) = finished {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// A fresh random HS256 secret.
pub fn random_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 32];
    getrandom::fill(&mut secret).expect("the OS random number generator is available");
    secret
}

/// Seconds since the epoch as a `SystemTime`, for tests.
#[allow(dead_code)]
pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}
