//! Tokens from a real OpenID provider (panva's `oidc-provider`, run by node
//! from `tests/oidc/`) authenticating real WebSocket upgrades over loopback:
//! discovery, key rotation, a flood of unknown `kid`s, the provider going down
//! and coming back, two providers at once. Needs `node`; installs the npm
//! package itself when missing. Fails, never skips, when node is missing.
#![cfg(all(feature = "oidc", feature = "axum", feature = "rust-crypto"))]

mod common;

#[allow(dead_code)]
#[path = "../examples/demo/app.rs"]
mod demo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use futures_util::{stream, StreamExt};
use http::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tower_ws_auth::jwt::BasicClaims;
use tower_ws_auth::oidc::OidcVerifier;
use tower_ws_auth::source::{Bearer, Query, Subprotocol};
use tower_ws_auth::ticket::{MemoryTicketStore, TicketEndpoint, TicketStore};
use tower_ws_auth::{Authenticated, WsAuthLayer};

const AUDIENCE: &str = "urn:ws:api";
const CLIENT_SECRET: &str = "ws-client-secret-of-a-reasonable-length";
/// Node starting on a busy two-core machine can be slow.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One `oidc-provider` process, restartable on the same port with other keys.
struct Provider {
    dir: PathBuf,
    port: u16,
    max_age: Option<u32>,
    child: Option<Child>,
}

fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

async fn install_provider() {
    static INSTALL: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALL
        .get_or_init(|| async {
            let dir = provider_dir();
            if dir.join("node_modules/oidc-provider/package.json").exists() {
                return;
            }
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--silent"])
                .current_dir(&dir)
                .status()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "npm could not be run ({e}); install node: apt-get install -y nodejs npm"
                    )
                });
            assert!(status.success(), "npm ci in tests/oidc failed");
        })
        .await;
}

impl Provider {
    /// A provider on a free port signing with key `k1`.
    async fn start(max_age: Option<u32>) -> Self {
        install_provider().await;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tower-ws-auth-oidc-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut provider = Self {
            dir,
            port: 0,
            max_age,
            child: None,
        };
        provider.run("k1").await;
        provider
    }

    /// Start the process with `keys` (signing key first), on this provider's
    /// port once it has one.
    async fn run(&mut self, keys: &str) {
        let log = std::fs::File::create(self.dir.join("provider.log")).unwrap();
        let mut command = Command::new("node");
        command
            .arg(provider_dir().join("provider.mjs"))
            .env("PORT", self.port.to_string())
            .env("KEYS_DIR", &self.dir)
            .env("KEYS", keys)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        if let Some(max_age) = self.max_age {
            command.env("MAX_AGE", max_age.to_string());
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("node could not be started ({e}); install it: apt-get install -y nodejs npm")
        });
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the provider did not start: {}", self.log()))
            .unwrap()
            .unwrap_or_else(|| panic!("the provider exited: {}", self.log()));
        let url = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected: {line}"));
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        // Whatever else it prints is read, so that a write never fails on a
        // closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        assert!(self.port == 0 || self.port == port);
        self.port = port;
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("provider.log")).unwrap_or_default()
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Stop, then start again on the same port with `keys`.
    async fn restart(&mut self, keys: &str) {
        self.stop().await;
        self.run(keys).await;
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A JWT access token (client credentials) for `resource`.
    async fn access_token(&self, resource: &str) -> String {
        let body = format!(
            "grant_type=client_credentials&client_id=ws-client&client_secret={CLIENT_SECRET}&scope=ws&resource={}",
            percent_encoding::utf8_percent_encode(resource, percent_encoding::NON_ALPHANUMERIC)
        );
        let response = http(
            self.addr(),
            "POST",
            "/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            &body,
        )
        .await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        response.json()["access_token"].as_str().unwrap().to_owned()
    }

    /// An ID token for `sub` (audience: the client, `ws-client`).
    async fn id_token(&self, sub: &str) -> String {
        let response = http(
            self.addr(),
            "GET",
            &format!("/test/id-token?sub={sub}"),
            &[],
            "",
        )
        .await;
        if response.status != StatusCode::OK {
            panic!("{response:?}\n{}", self.log());
        }
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        response.json()["id_token"].as_str().unwrap().to_owned()
    }

    /// (JWKS fetches, discovery fetches) since this process started.
    async fn fetches(&self) -> (u64, u64) {
        let stats = http(self.addr(), "GET", "/test/stats", &[], "")
            .await
            .json();
        (
            stats["jwks"].as_u64().unwrap(),
            stats["discovery"].as_u64().unwrap(),
        )
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn header(token: &str) -> Value {
    let segment = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

/// `token` with its header's `kid` replaced (the signature no longer matches,
/// which a verifier only finds out once it has a key to check it with).
fn with_kid(token: &str, kid: &str) -> String {
    let mut head = header(token);
    head["kid"] = kid.into();
    let rest = token.split_once('.').unwrap().1;
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(head.to_string()))
}

async fn welcome(upgrade: WebSocketUpgrade, auth: Authenticated<BasicClaims>) -> Response {
    upgrade
        .protocols(["chat"])
        .on_upgrade(move |mut socket| async move {
            let hello =
                json!({"type": "welcome", "user": auth.identity.sub, "via": auth.via.as_str()});
            let _ = socket.send(Message::text(hello.to_string())).await;
        })
}

/// `/ws` (Bearer, ticket, subprotocol) and `/ws-ticket` (Bearer), with the
/// provider's tokens checked by `verifier`.
async fn server(verifier: OidcVerifier<BasicClaims>) -> SocketAddr {
    let tickets = MemoryTicketStore::<BasicClaims>::new();
    let app = Router::new()
        .route(
            "/ws-ticket",
            post(TicketEndpoint::new(tickets.clone()))
                .route_layer(WsAuthLayer::new(Bearer, verifier.clone()).all_requests()),
        )
        .route(
            "/ws",
            get(welcome).route_layer(
                WsAuthLayer::new(Bearer, verifier.clone())
                    .or(Query::param("ticket"), tickets.verifier())
                    .or(Subprotocol::prefix("bearer."), verifier),
            ),
        );
    serve(app).await
}

/// The status of `GET /ws` with `Authorization: Bearer <token>`: 101 or the
/// refusal's.
async fn bearer_status(addr: SocketAddr, token: &str) -> StatusCode {
    let bearer = format!("Bearer {token}");
    match connect(addr, "/ws", &[("authorization", &bearer)]).await {
        Ok(_) => StatusCode::SWITCHING_PROTOCOLS,
        Err(refused) => refused.status,
    }
}

async fn assert_welcome(addr: SocketAddr, path: &str, headers: &[(&str, &str)], via: &str) {
    let (mut socket, _) = connect(addr, path, headers)
        .await
        .unwrap_or_else(|r| panic!("{path} refused: {r:?}"));
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "welcome", "user": "ws-client", "via": via})
    );
}

/// Poll `check` every 100 ms until it holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_tokens_open_sockets_and_buy_tickets() {
    let provider = Provider::start(None).await;
    let other = Provider::start(None).await;
    let verifier = OidcVerifier::<BasicClaims>::discover(provider.issuer())
        .audience(&[AUDIENCE])
        .build()
        .unwrap();
    let addr = server(verifier).await;

    let token = provider.access_token(AUDIENCE).await;
    assert_eq!(header(&token)["typ"], "at+jwt", "an RFC 9068 access token");
    let bearer = format!("Bearer {token}");
    assert_welcome(addr, "/ws", &[("authorization", &bearer)], "header").await;
    let offer = format!("bearer.{token}, chat");
    assert_welcome(
        addr,
        "/ws",
        &[("sec-websocket-protocol", &offer)],
        "subprotocol",
    )
    .await;
    let ticket = issue_ticket(addr, &token).await;
    assert_welcome(addr, &format!("/ws?ticket={ticket}"), &[], "query").await;

    // Another API's token from the same provider.
    let elsewhere = provider.access_token("urn:other:api").await;
    assert_eq!(
        bearer_status(addr, &elsewhere).await,
        StatusCode::UNAUTHORIZED
    );
    let refused = http(
        addr,
        "POST",
        "/ws-ticket",
        &[("authorization", &format!("Bearer {elsewhere}"))],
        "",
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // Another provider's token, for the right audience.
    let stranger = other.access_token(AUDIENCE).await;
    assert_eq!(
        bearer_status(addr, &stranger).await,
        StatusCode::UNAUTHORIZED
    );
    // A token with its payload altered keeps a known kid: a bad signature.
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let mut claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(rest.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    claims["sub"] = "admin".into();
    let forged = format!(
        "{head}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    assert_eq!(bearer_status(addr, &forged).await, StatusCode::UNAUTHORIZED);
    // One discovery and one key set served everything above.
    assert_eq!(provider.fetches().await, (1, 1));
    assert_eq!(other.fetches().await, (0, 0));

    // ID tokens: their audience is the client; refused where only access
    // tokens are accepted.
    let id_token = provider.id_token("bob").await;
    let for_client = OidcVerifier::<BasicClaims>::discover(provider.issuer())
        .audience(&["ws-client"])
        .build()
        .unwrap();
    let verified = tower_ws_auth::Verifier::verify(
        &for_client,
        tower_ws_auth::Credential::new(tower_ws_auth::SourceKind::Header, &id_token),
    )
    .await
    .unwrap();
    assert_eq!(verified.identity.sub, "bob");
    assert_eq!(
        bearer_status(addr, &id_token).await,
        StatusCode::UNAUTHORIZED
    );
    let access_only = OidcVerifier::<BasicClaims>::discover(provider.issuer())
        .audience(&["ws-client", AUDIENCE])
        .access_tokens_only()
        .build()
        .unwrap();
    let strict = server(access_only).await;
    assert_eq!(
        bearer_status(strict, &token).await,
        StatusCode::SWITCHING_PROTOCOLS
    );
    assert_eq!(
        bearer_status(strict, &id_token).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_new_key_accepted_removed_key_refused() {
    // The provider lets its key set be cached for 1 s; the verifier follows.
    let mut provider = Provider::start(Some(1)).await;
    let verifier = OidcVerifier::<BasicClaims>::discover(provider.issuer())
        .audience(&[AUDIENCE])
        .refresh(
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_secs(5),
        )
        .build()
        .unwrap();
    let addr = server(verifier).await;
    let old = provider.access_token(AUDIENCE).await;
    assert_eq!(
        bearer_status(addr, &old).await,
        StatusCode::SWITCHING_PROTOCOLS
    );

    // A new signing key, published beside the old one.
    provider.restart("k2,k1").await;
    let new = provider.access_token(AUDIENCE).await;
    assert_ne!(header(&new)["kid"], header(&old)["kid"]);
    // Accepted at the first try: its unknown kid triggers a refresh.
    assert_eq!(
        bearer_status(addr, &new).await,
        StatusCode::SWITCHING_PROTOCOLS
    );
    assert_eq!(
        bearer_status(addr, &old).await,
        StatusCode::SWITCHING_PROTOCOLS
    );

    // The old key withdrawn: refused once a refresh has seen it gone.
    provider.restart("k2").await;
    eventually(
        Duration::from_secs(30),
        "the withdrawn key refused",
        || async { bearer_status(addr, &old).await == StatusCode::UNAUTHORIZED },
    )
    .await;
    assert_eq!(
        bearer_status(addr, &new).await,
        StatusCode::SWITCHING_PROTOCOLS
    );
    // The schedule came from max-age: the background refresh keeps fetching.
    let (before, _) = provider.fetches().await;
    eventually(Duration::from_secs(30), "a scheduled refresh", || async {
        provider.fetches().await.0 > before
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_unknown_kids_cost_at_most_a_couple_of_fetches() {
    let provider = Provider::start(None).await;
    let verifier = OidcVerifier::<BasicClaims>::discover(provider.issuer())
        .audience(&[AUDIENCE])
        .build()
        .unwrap();
    let addr = server(verifier).await;
    let token = provider.access_token(AUDIENCE).await;
    assert_eq!(
        bearer_status(addr, &token).await,
        StatusCode::SWITCHING_PROTOCOLS
    );
    let (before, _) = provider.fetches().await;

    let forged: Vec<String> = (0..1000)
        .map(|_| {
            let mut bytes = [0u8; 12];
            getrandom::fill(&mut bytes).unwrap();
            with_kid(&token, &URL_SAFE_NO_PAD.encode(bytes))
        })
        .collect();
    let statuses: Vec<StatusCode> = stream::iter(forged.iter())
        .map(|t| bearer_status(addr, t))
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    // The real token is still decided from the cache.
    assert_eq!(
        bearer_status(addr, &token).await,
        StatusCode::SWITCHING_PROTOCOLS
    );
    let (after, _) = provider.fetches().await;
    assert!(
        after - before <= 2,
        "{} JWKS fetches for 1,000 unknown kids",
        after - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_cached_keys_work_fresh_verifier_503_then_recovers() {
    let mut provider = Provider::start(None).await;
    let build = |issuer: String| {
        OidcVerifier::<BasicClaims>::discover(issuer)
            .audience(&[AUDIENCE])
            .unknown_key_refresh(Duration::from_millis(200))
            .fetch_timeout(Duration::from_secs(2))
            .build()
            .unwrap()
    };
    let warm = server(build(provider.issuer())).await;
    let token = provider.access_token(AUDIENCE).await;
    assert_eq!(
        bearer_status(warm, &token).await,
        StatusCode::SWITCHING_PROTOCOLS
    );

    provider.stop().await;
    assert_eq!(
        bearer_status(warm, &token).await,
        StatusCode::SWITCHING_PROTOCOLS
    );
    let fresh = server(build(provider.issuer())).await;
    let bearer = format!("Bearer {token}");
    let refused = refused(fresh, "/ws", &[("authorization", &bearer)]).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{refused:?}"
    );
    assert!(!refused.body.contains(&token));
    // A ticket cannot be bought with it either: 503, not 401.
    let response = http(
        fresh,
        "POST",
        "/ws-ticket",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);

    // Back, same keys: the fresh verifier recovers without a restart.
    provider.restart("k1").await;
    eventually(
        Duration::from_secs(30),
        "the fresh verifier recovering",
        || async { bearer_status(fresh, &token).await == StatusCode::SWITCHING_PROTOCOLS },
    )
    .await;
    assert_eq!(
        bearer_status(warm, &token).await,
        StatusCode::SWITCHING_PROTOCOLS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_providers_at_once_and_an_unconfigured_issuer_costs_no_fetch() {
    let (a, b, c) = tokio::join!(
        Provider::start(None),
        Provider::start(None),
        Provider::start(None)
    );
    let verifier = OidcVerifier::<BasicClaims>::builder()
        .discover(a.issuer())
        .discover(b.issuer())
        .audience(&[AUDIENCE])
        .build()
        .unwrap();
    let addr = server(verifier).await;
    for provider in [&a, &b] {
        let token = provider.access_token(AUDIENCE).await;
        assert_eq!(
            bearer_status(addr, &token).await,
            StatusCode::SWITCHING_PROTOCOLS
        );
    }
    let fetched = (a.fetches().await, b.fetches().await);

    // An issuer that is not configured: refused, and nobody is asked.
    let stranger = c.access_token(AUDIENCE).await;
    for _ in 0..20 {
        assert_eq!(
            bearer_status(addr, &stranger).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // Even with a kid no configured issuer knows.
    let unknown = with_kid(&stranger, "never-published");
    assert_eq!(
        bearer_status(addr, &unknown).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!((a.fetches().await, b.fetches().await), fetched);
    assert_eq!(c.fetches().await, (0, 0));
    // Each issuer's keys verify only its own tokens: A's token naming B's key
    // is refused.
    let from_a = a.access_token(AUDIENCE).await;
    assert_eq!(
        bearer_status(addr, &from_a).await,
        StatusCode::SWITCHING_PROTOCOLS
    );
    let b_kid = header(&b.access_token(AUDIENCE).await)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        bearer_status(addr, &with_kid(&from_a, &b_kid)).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_accepts_the_providers_tokens_beside_its_own() {
    let provider = Provider::start(None).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = demo::Config {
        jwt_secret: demo::random_secret(),
        allowed_origins: vec![format!("http://127.0.0.1:{}", addr.port())],
        redis_url: None,
        max_sessions: demo::MAX_SESSIONS,
    };
    let oidc = demo::Oidc {
        issuer: provider.issuer(),
        audience: AUDIENCE.into(),
    };
    let router = demo::router_with_oidc(config, Some(oidc)).unwrap();
    tokio::spawn(demo::serve(listener, router, demo::HEADER_READ_TIMEOUT));

    async fn welcome_of(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Value {
        let (mut socket, _) = connect(addr, path, headers)
            .await
            .unwrap_or_else(|r| panic!("{path} refused: {r:?}"));
        next_json(&mut socket).await
    }

    // The provider's access token: Bearer, subprotocol, and a ticket bought with it.
    let token = provider.access_token(AUDIENCE).await;
    let bearer = format!("Bearer {token}");
    assert_eq!(
        welcome_of(addr, "/ws", &[("authorization", &bearer)]).await,
        json!({"type": "welcome", "user": "ws-client", "via": "header"})
    );
    let offer = format!("bearer.{token}, chat");
    assert_eq!(
        welcome_of(addr, "/ws", &[("sec-websocket-protocol", &offer)]).await,
        json!({"type": "welcome", "user": "ws-client", "via": "subprotocol"})
    );
    let ticket = issue_ticket(addr, &token).await;
    assert_eq!(
        welcome_of(addr, &format!("/ws?ticket={ticket}"), &[]).await,
        json!({"type": "welcome", "user": "ws-client", "via": "ticket"})
    );
    // Another API's token: refused.
    let elsewhere = provider.access_token("urn:other:api").await;
    assert_eq!(
        bearer_status(addr, &elsewhere).await,
        StatusCode::UNAUTHORIZED
    );

    // The demo's own login tokens still work.
    let login = http(
        addr,
        "POST",
        "/login",
        &[("content-type", "application/json")],
        r#"{"user":"alice"}"#,
    )
    .await;
    let own = login.json()["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {own}");
    assert_eq!(
        welcome_of(addr, "/ws", &[("authorization", &bearer)]).await,
        json!({"type": "welcome", "user": "alice", "via": "header"})
    );
}
