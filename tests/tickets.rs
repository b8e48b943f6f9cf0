//! One-time tickets end to end, over loopback with real WebSocket clients:
//! issued at the endpoint, redeemed exactly once at the upgrade, for the memory
//! store and (feature `redis`) a real `redis-server`.
#![cfg(all(feature = "axum", feature = "jwt", feature = "rust-crypto"))]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use common::*;
use http::{StatusCode, Uri};
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
use tower_ws_auth::source::{Bearer, Cookie, Query, Subprotocol};
use tower_ws_auth::ticket::{MemoryTicketStore, TicketEndpoint, TicketStore};
use tower_ws_auth::{AuthError, AuthErrorKind, Authenticated, Credential, Verified, WsAuthLayer};

async fn report(upgrade: WebSocketUpgrade, auth: Authenticated<BasicClaims>, uri: Uri) -> Response {
    upgrade.on_upgrade(move |mut socket| async move {
        let seen = serde_json::json!({"user": auth.identity.sub, "via": auth.via.as_str(), "uri": uri.to_string()});
        let _ = socket.send(Message::text(seen.to_string())).await;
    })
}

/// A server issuing tickets from `store` at `POST /ws-ticket` (bearer JWT) and
/// redeeming them at `GET /ws?ticket=`, with a redacting TraceLayer outside.
async fn ticket_server<St>(store: St, ttl: Duration) -> SocketAddr
where
    St: TicketStore<Identity = BasicClaims> + Clone + Send + Sync + 'static,
    St::IssueFuture: Send,
    St::RedeemFuture: Send + 'static,
{
    captured_logs();
    let jwt = JwtVerifier::<BasicClaims>::hs256(SECRET).unwrap();
    // The ticket first, then the sources that can still refuse the request
    // after the ticket was found: a malformed subprotocol offer and (turned on
    // by the cookie source) the Origin check.
    let no_sessions = |_: Credential| {
        std::future::ready(Err::<Verified<BasicClaims>, _>(AuthError::new(
            AuthErrorKind::Invalid,
        )))
    };
    let ws_auth = WsAuthLayer::new(Query::param("ticket"), store.verifier())
        .or(Subprotocol::prefix("bearer."), jwt.clone())
        .or(Cookie::named("session"), no_sessions);
    let redactor = ws_auth.redactor();
    let app = Router::new()
        .route(
            "/ws-ticket",
            post(TicketEndpoint::new(store).ttl(ttl))
                .route_layer(WsAuthLayer::new(Bearer, jwt).all_requests()),
        )
        .route("/ws", get(report).route_layer(ws_auth))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                move |req: &http::Request<axum::body::Body>| {
                    tracing::info_span!("request", uri = %redactor.uri(req.uri()))
                },
            ),
        );
    serve(app).await
}

/// `POST /ws-ticket`, with a bearer token or none.
async fn post_ticket(
    addr: SocketAddr,
    bearer: Option<&str>,
) -> (StatusCode, serde_json::Value, http::HeaderMap) {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let response = http(addr, "POST", "/ws-ticket", &headers, "").await;
    (response.status, response.json(), response.headers)
}

async fn issue(addr: SocketAddr, sub: &str) -> String {
    issue_ticket(addr, &token(sub, 600)).await
}

async fn redeem_status(addr: SocketAddr, ticket: &str) -> Result<serde_json::Value, StatusCode> {
    match connect(addr, &format!("/ws?ticket={ticket}"), &[]).await {
        Ok((mut socket, _)) => Ok(next_json(&mut socket).await),
        Err(refused) => Err(refused.status),
    }
}

fn assert_not_logged(tickets: &[String]) {
    let logs = log_text();
    assert!(
        logs.contains("ticket=[redacted]"),
        "the trace layer logged the upgrade"
    );
    for ticket in tickets {
        assert!(!logs.contains(ticket.as_str()), "a ticket reached the log");
    }
}

/// The whole contract, for any store.
async fn exercise<St>(store: St)
where
    St: TicketStore<Identity = BasicClaims> + Clone + Send + Sync + 'static,
    St::IssueFuture: Send,
    St::RedeemFuture: Send + 'static,
{
    let addr = ticket_server(store.clone(), Duration::from_secs(30)).await;

    // Issue, redeem once, replay refused.
    let (status, body, headers) = post_ticket(addr, Some(&token("alice", 600))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["expires_in"], 30);
    assert_eq!(headers["cache-control"], "no-store");
    let ticket = body["ticket"].as_str().unwrap().to_owned();
    assert_eq!(ticket.len(), 43);
    let seen = redeem_status(addr, &ticket).await.unwrap();
    assert_eq!(seen["user"], "alice");
    assert_eq!(seen["via"], "query");
    assert_eq!(seen["uri"], "/ws", "the inner service saw the ticket");
    assert_eq!(
        redeem_status(addr, &ticket).await.unwrap_err(),
        StatusCode::UNAUTHORIZED
    );

    // Unknown and malformed tickets.
    let unknown = "A".repeat(43);
    assert_eq!(
        redeem_status(addr, &unknown).await.unwrap_err(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        redeem_status(addr, "short").await.unwrap_err(),
        StatusCode::UNAUTHORIZED
    );

    // The endpoint needs an identity.
    let (status, _, headers) = post_ticket(addr, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer");

    // A ticket never outlives the credential that asked for it: `exp` plus
    // the verifier's 5 s leeway.
    let (status, body, _) = post_ticket(addr, Some(&token("alice", 3))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["expires_in"].as_u64().unwrap() <= 3 + 5, "{body}");

    // Expired tickets are refused.
    let short = ticket_server(store.clone(), Duration::from_millis(300)).await;
    let expiring = issue(short, "alice").await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        redeem_status(short, &expiring).await.unwrap_err(),
        StatusCode::UNAUTHORIZED
    );

    // A request refused for anything else never spends its ticket.
    let kept = issue(addr, "alice").await;
    let path = format!("/ws?ticket={kept}");
    for (headers, status) in [
        (
            vec![("sec-websocket-protocol", "bearer.x")],
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![("origin", "https://evil.example")],
            StatusCode::FORBIDDEN,
        ),
    ] {
        assert_eq!(
            refused(addr, &path, &headers).await.status,
            status,
            "{headers:?}"
        );
    }
    let twice = format!("/ws?ticket={kept}&ticket={kept}");
    assert_eq!(
        refused(addr, &twice, &[]).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(redeem_status(addr, &kept).await.unwrap()["user"], "alice");

    // 50 concurrent clients race for one ticket: exactly one gets in.
    let contested = issue(addr, "bob").await;
    let racers: Vec<_> = (0..50)
        .map(|_| {
            let ticket = contested.clone();
            tokio::spawn(async move { redeem_status(addr, &ticket).await })
        })
        .collect();
    let mut accepted = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(seen) => {
                assert_eq!(seen["user"], "bob");
                accepted += 1;
            }
            Err(status) => assert_eq!(status, StatusCode::UNAUTHORIZED),
        }
    }
    assert_eq!(
        accepted, 1,
        "exactly one of 50 concurrent redemptions succeeds"
    );

    assert_not_logged(&[ticket, expiring, contested, kept]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_redeems_exactly_once() {
    exercise(MemoryTicketStore::<BasicClaims>::new()).await;
}

#[tokio::test]
async fn memory_store_cap_answers_429() {
    let addr = ticket_server(
        MemoryTicketStore::<BasicClaims>::with_limits(100, 2),
        Duration::from_secs(30),
    )
    .await;
    issue(addr, "carol").await;
    issue(addr, "carol").await;
    let (status, body, _) = post_ticket(addr, Some(&token("carol", 600))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    issue(addr, "dave").await;
}

/// A full store never locks a new user out: the ticket closest to expiry
/// makes room, and everything issued since still redeems.
async fn total_cap_evicts_the_soonest<St>(store: St)
where
    St: TicketStore<Identity = BasicClaims> + Clone + Send + Sync + 'static,
    St::IssueFuture: Send,
    St::RedeemFuture: Send + 'static,
{
    let addr = ticket_server(store, Duration::from_secs(30)).await;
    let mut tickets = Vec::new();
    for user in ["u1", "u2", "u3", "u4", "u5"] {
        tickets.push(issue(addr, user).await);
        // Distinct expiry instants, so "soonest" is the order of issue.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for evicted in &tickets[..2] {
        assert_eq!(
            redeem_status(addr, evicted).await.unwrap_err(),
            StatusCode::UNAUTHORIZED
        );
    }
    for (ticket, user) in tickets[2..].iter().zip(["u3", "u4", "u5"]) {
        assert_eq!(redeem_status(addr, ticket).await.unwrap()["user"], user);
    }
}

#[tokio::test]
async fn memory_store_total_cap_never_locks_a_new_user_out() {
    total_cap_evicts_the_soonest(MemoryTicketStore::<BasicClaims>::with_limits(3, 16)).await;
}

#[cfg(feature = "redis")]
mod redis_store {
    use super::*;
    use tower_ws_auth::ticket::RedisTicketStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_store_redeems_exactly_once() {
        let (url, _server) = shared_redis();
        exercise(
            RedisTicketStore::<BasicClaims>::open(&url)
                .unwrap()
                .prefix("exactly-once:"),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_total_cap_never_locks_a_new_user_out() {
        let (url, _server) = shared_redis();
        total_cap_evicts_the_soonest(
            RedisTicketStore::<BasicClaims>::open(&url)
                .unwrap()
                .prefix("total-cap:")
                .limits(3, 16),
        )
        .await;
    }

    /// 24 concurrent requests for one subject, spread over two instances:
    /// exactly the cap is issued, the rest get 429.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_per_subject_cap_holds_across_instances() {
        let (url, _server) = shared_redis();
        let store = || {
            RedisTicketStore::<BasicClaims>::open(&url)
                .unwrap()
                .prefix("subject-cap:")
                .limits(1000, 4)
        };
        let a = ticket_server(store(), Duration::from_secs(30)).await;
        let b = ticket_server(store(), Duration::from_secs(30)).await;
        let bearer = token("grace", 600);
        let requests: Vec<_> = (0..24)
            .map(|i| {
                let addr = if i % 2 == 0 { a } else { b };
                let bearer = bearer.clone();
                tokio::spawn(async move { post_ticket(addr, Some(&bearer)).await.0 })
            })
            .collect();
        let (mut issued, mut capped) = (0, 0);
        for request in requests {
            match request.await.unwrap() {
                StatusCode::OK => issued += 1,
                StatusCode::TOO_MANY_REQUESTS => capped += 1,
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!((issued, capped), (4, 20));
        // Another subject is not affected.
        issue(a, "heidi").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_share_one_redis() {
        let (url, _server) = shared_redis();
        let a = ticket_server(
            RedisTicketStore::<BasicClaims>::open(&url)
                .unwrap()
                .prefix("shared:"),
            Duration::from_secs(30),
        )
        .await;
        let b = ticket_server(
            RedisTicketStore::<BasicClaims>::open(&url)
                .unwrap()
                .prefix("shared:"),
            Duration::from_secs(30),
        )
        .await;
        let ticket = issue(a, "erin").await;
        assert_eq!(redeem_status(b, &ticket).await.unwrap()["user"], "erin");
        assert_eq!(
            redeem_status(a, &ticket).await.unwrap_err(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            redeem_status(b, &ticket).await.unwrap_err(),
            StatusCode::UNAUTHORIZED
        );
        assert_not_logged(&[ticket]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_down_fails_closed_and_recovers() {
        let mut redis = RedisServer::start();
        let addr = ticket_server(
            RedisTicketStore::<BasicClaims>::open(&redis.url()).unwrap(),
            Duration::from_secs(30),
        )
        .await;
        let issued_before = issue(addr, "frank").await;

        redis.stop();
        // Redemption fails closed: 503, never an accepted upgrade.
        for _ in 0..3 {
            assert_eq!(
                redeem_status(addr, &issued_before).await.unwrap_err(),
                StatusCode::SERVICE_UNAVAILABLE
            );
        }
        let (status, _, _) = post_ticket(addr, Some(&token("frank", 600))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

        redis.restart();
        // Same process, no restart: works again once Redis is back.
        let mut recovered = None;
        for _ in 0..50 {
            let (status, body, _) = post_ticket(addr, Some(&token("frank", 600))).await;
            if status == StatusCode::OK {
                recovered = Some(body["ticket"].as_str().unwrap().to_owned());
                break;
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ticket = recovered.expect("issuing recovers after Redis restarts");
        assert_eq!(redeem_status(addr, &ticket).await.unwrap()["user"], "frank");
        assert_not_logged(&[issued_before, ticket]);
    }
}
