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
use tower_ws_auth::source::{Bearer, Query};
use tower_ws_auth::ticket::{MemoryTicketStore, TicketEndpoint, TicketStore};
use tower_ws_auth::{Authenticated, WsAuthLayer};

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
    let ws_auth = WsAuthLayer::new(Query::param("ticket"), store.verifier());
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

    // A ticket never outlives the credential that asked for it.
    let (status, body, _) = post_ticket(addr, Some(&token("alice", 3))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["expires_in"].as_u64().unwrap() <= 3, "{body}");

    // Expired tickets are refused.
    let short = ticket_server(store.clone(), Duration::from_millis(300)).await;
    let expiring = issue(short, "alice").await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        redeem_status(short, &expiring).await.unwrap_err(),
        StatusCode::UNAUTHORIZED
    );

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

    assert_not_logged(&[ticket, expiring, contested]);
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
