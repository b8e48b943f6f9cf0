//! What operators see: one span per authenticated upgrade and per guarded
//! socket (subject, source, outcome; never a secret), ticket events, and the
//! `metrics` counters and gauge read through a recorder.
#![cfg(all(
    feature = "metrics",
    feature = "axum",
    feature = "jwt",
    feature = "rust-crypto"
))]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use common::*;
use futures_util::StreamExt;
use http::StatusCode;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use tower_ws_auth::first_message::{JsonAuth, LifetimeGuard};
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
use tower_ws_auth::source::{Bearer, Query};
use tower_ws_auth::ticket::{MemoryTicketStore, TicketEndpoint, TicketStore};
use tower_ws_auth::{Authenticated, WsAuthLayer};

/// One value per metric name and label set, as `name{k=v,…}`.
#[derive(Default)]
struct Values(Mutex<HashMap<String, Arc<AtomicU64>>>);

struct Handle(Arc<AtomicU64>);

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

/// Gauges in thousandths, so that whole increments stay exact.
impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        self.0.fetch_add((value * 1000.0) as u64, Ordering::Relaxed);
    }
    fn decrement(&self, value: f64) {
        self.0.fetch_sub((value * 1000.0) as u64, Ordering::Relaxed);
    }
    fn set(&self, value: f64) {
        self.0.store((value * 1000.0) as u64, Ordering::Relaxed);
    }
}

struct TestRecorder(Arc<Values>);

fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl TestRecorder {
    fn handle(&self, key: &Key) -> Arc<Handle> {
        let mut values = self.0 .0.lock().unwrap();
        let value = values.entry(render(key)).or_default().clone();
        Arc::new(Handle(value))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn recorded() -> Arc<Values> {
    static VALUES: OnceLock<Arc<Values>> = OnceLock::new();
    VALUES
        .get_or_init(|| {
            let values = Arc::new(Values::default());
            metrics::set_global_recorder(TestRecorder(values.clone())).unwrap();
            values
        })
        .clone()
}

fn value(name: &str) -> u64 {
    recorded()
        .0
        .lock()
        .unwrap()
        .get(name)
        .map_or(0, |v| v.load(Ordering::Relaxed))
}

async fn guarded(
    upgrade: WebSocketUpgrade,
    auth: Authenticated<BasicClaims>,
    jwt: JwtVerifier<BasicClaims>,
) -> Response {
    upgrade.on_upgrade(move |socket| async move {
        let mut socket = LifetimeGuard::new(socket, &auth.identity, auth.expires_at, jwt, JsonAuth);
        while let Some(Ok(_)) = socket.next().await {}
    })
}

/// The counters are global: tests in this file take turns.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

async fn server() -> std::net::SocketAddr {
    captured_logs();
    recorded();
    // No leeway: the socket closes at `exp` itself.
    let jwt = JwtVerifier::<BasicClaims>::hs256(SECRET)
        .unwrap()
        .leeway(Duration::ZERO);
    let tickets = MemoryTicketStore::<BasicClaims>::new();
    let guard = jwt.clone();
    let app = Router::new()
        .route(
            "/ws-ticket",
            post(TicketEndpoint::new(tickets.clone()))
                .route_layer(WsAuthLayer::new(Bearer, jwt.clone()).all_requests()),
        )
        .route(
            "/ws",
            get(move |upgrade, auth| guarded(upgrade, auth, guard.clone())).route_layer(
                WsAuthLayer::new(Bearer, jwt).or(Query::param("ticket"), tickets.verifier()),
            ),
        );
    serve(app).await
}

/// Counters only grow, and tests in this binary share them: compare
/// before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_upgrades_tickets_and_guarded_sockets() {
    let _turn = one_at_a_time().await;
    let addr = server().await;
    assert_eq!(no_guarded_sockets().await, 0);
    let accepted = "ws_auth_upgrades_total{outcome=accepted,reason=none,source=header}";
    let refused = "ws_auth_upgrades_total{outcome=refused,reason=invalid,source=header}";
    let missing = "ws_auth_upgrades_total{outcome=refused,reason=missing,source=none}";
    let by_ticket = "ws_auth_upgrades_total{outcome=accepted,reason=none,source=query}";
    let issued = "ws_auth_tickets_total{event=issued}";
    let redeemed = "ws_auth_tickets_total{event=redeemed}";
    let ticket_refused = "ws_auth_tickets_total{event=refused}";
    let expired = "ws_auth_sockets_closed_total{reason=expired}";
    let open = "ws_auth_guarded_sockets{}";
    let before: HashMap<&str, u64> = [
        accepted,
        refused,
        missing,
        by_ticket,
        issued,
        redeemed,
        ticket_refused,
        expired,
    ]
    .into_iter()
    .map(|name| (name, value(name)))
    .collect();
    let grew = |name: &str| value(name) - before[name];

    let alice = token("alice", 2);
    let (mut socket, _) = connect(
        addr,
        "/ws",
        &[("authorization", &format!("Bearer {alice}"))],
    )
    .await
    .unwrap();
    // The handler's task starts after the client's handshake completes.
    let mut gauge = 0;
    for _ in 0..200 {
        gauge = value(open);
        if gauge == 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gauge, 1000, "one guarded socket open");
    let forged = refused_status(addr, &[("authorization", "Bearer forged")]).await;
    assert_eq!(forged, StatusCode::UNAUTHORIZED);
    assert_eq!(refused_status(addr, &[]).await, StatusCode::UNAUTHORIZED);

    let ticket = issue_ticket(addr, &token("bob", 60)).await;
    let (_bob, _) = connect(addr, &format!("/ws?ticket={ticket}"), &[])
        .await
        .unwrap();
    let replay = common::refused(addr, &format!("/ws?ticket={ticket}"), &[]).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);

    // Alice's token expires: the guard closes her socket.
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(10)).await,
        Some(4002)
    );

    assert_eq!(grew(accepted), 2, "alice's upgrade and the ticket request");
    assert_eq!(grew(refused), 1);
    assert_eq!(grew(missing), 1);
    assert_eq!(grew(by_ticket), 1);
    assert_eq!(grew(issued), 1);
    assert_eq!(grew(redeemed), 1);
    assert_eq!(grew(ticket_refused), 1);
    assert_eq!(grew(expired), 1);
    drop(_bob);
    assert_eq!(
        no_guarded_sockets().await,
        0,
        "every guarded socket was closed"
    );
}

/// Wait until no guarded socket is open (server tasks end shortly after their
/// clients see the close).
async fn no_guarded_sockets() -> u64 {
    let mut gauge = value("ws_auth_guarded_sockets{}");
    for _ in 0..400 {
        if gauge == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        gauge = value("ws_auth_guarded_sockets{}");
    }
    gauge
}

async fn refused_status(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> StatusCode {
    common::refused(addr, "/ws", headers).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_carry_subject_source_and_outcome_never_a_secret() {
    let _turn = one_at_a_time().await;
    let addr = server().await;
    let token = token("carol", 60);
    let ticket = issue_ticket(addr, &token).await;
    let (mut socket, _) = connect(addr, &format!("/ws?ticket={ticket}"), &[])
        .await
        .unwrap();
    let refused = common::refused(addr, "/ws", &[("authorization", "Bearer forged")]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    drop(socket.close(None).await);

    let logs = log_text();
    let lines: Vec<&str> = logs.lines().collect();
    let has = |parts: &[&str]| lines.iter().any(|l| parts.iter().all(|p| l.contains(p)));
    assert!(
        has(&[
            "ws_auth{upgrade=true",
            "via=\"query\"",
            "subject=\"carol\"",
            "outcome=\"accepted\"",
            "websocket upgrade authenticated"
        ]),
        "{logs}"
    );
    // The ticket request went through `.all_requests()`: authenticated, but
    // not as an upgrade.
    assert!(
        has(&[
            "ws_auth{upgrade=false",
            "subject=\"carol\"",
            "request authenticated"
        ]),
        "{logs}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("upgrade=false") && l.contains("websocket upgrade authenticated")),
        "{logs}"
    );
    assert!(
        has(&[
            "outcome=\"refused\"",
            "reason=\"invalid\"",
            "websocket authentication refused"
        ]),
        "{logs}"
    );
    assert!(has(&["subject=\"carol\"", "ticket issued"]), "{logs}");
    assert!(has(&["subject=\"carol\"", "ticket redeemed"]), "{logs}");
    assert!(
        !logs.contains(&token) && !logs.contains(&ticket),
        "a secret reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guards_events_are_inside_the_sockets_span() {
    let _turn = one_at_a_time().await;
    let addr = server().await;
    let dave = token("dave", 1);
    let (mut socket, _) = connect(addr, "/ws", &[("authorization", &format!("Bearer {dave}"))])
        .await
        .unwrap();
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(10)).await,
        Some(4002)
    );
    let logs = log_text();
    assert!(
        logs.lines()
            .any(|l| l.contains("ws_guard{subject=\"dave\"}")
                && l.contains("websocket credential expired")),
        "{logs}"
    );
}

/// A cookie tried before an explicit credential is a configuration that
/// lets an ambient cookie overrule the client's choice: building it warns.
#[tokio::test]
async fn a_cookie_before_an_explicit_source_warns_when_the_layer_is_built() {
    use tower::Layer;
    let _turn = one_at_a_time().await;
    captured_logs();
    let jwt = JwtVerifier::<BasicClaims>::hs256(SECRET).unwrap();
    let warning = "tries a cookie before an explicit credential";
    let explicit_first = WsAuthLayer::new(Bearer, jwt.clone())
        .or(tower_ws_auth::source::Cookie::named("session"), jwt.clone());
    let _ = explicit_first.layer(tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    }));
    assert!(!log_text().contains(warning));
    let cookie_first =
        WsAuthLayer::new(tower_ws_auth::source::Cookie::named("session"), jwt.clone())
            .or(Bearer, jwt);
    let _ = cookie_first.layer(tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    }));
    assert!(log_text().contains(warning), "{}", log_text());
}
