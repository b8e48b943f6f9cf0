//! The demo's contract (DESIGN.md), row by row, over loopback with a real
//! WebSocket client — and no credential in anything it logs.
#![cfg(all(feature = "axum", feature = "jwt", feature = "rust-crypto"))]

mod common;

#[allow(dead_code)]
#[path = "../examples/demo/app.rs"]
mod demo;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

struct Demo {
    addr: SocketAddr,
    origin: String,
}

/// The demo as `main.rs` runs it.
async fn start() -> Demo {
    start_with(demo::HEADER_READ_TIMEOUT, demo::MAX_SESSIONS).await
}

async fn start_with(header_read_timeout: Duration, max_sessions: usize) -> Demo {
    captured_logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = format!("http://127.0.0.1:{}", addr.port());
    let router = demo::router(demo::Config {
        jwt_secret: demo::random_secret(),
        allowed_origins: vec![origin.clone(), format!("http://localhost:{}", addr.port())],
        redis_url: None,
        max_sessions,
    })
    .unwrap();
    tokio::spawn(demo::serve(listener, router, header_read_timeout));
    Demo { addr, origin }
}

/// `POST /login` → (token, session cookie value).
async fn login(demo: &Demo, user: &str) -> (String, String) {
    let body = json!({ "user": user }).to_string();
    let response = http(
        demo.addr,
        "POST",
        "/login",
        &[("content-type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    let cookie = response.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );
    let session = cookie
        .trim_start_matches("session=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    (
        response.json()["token"].as_str().unwrap().to_owned(),
        session,
    )
}

async fn welcome(socket: &mut Client, via: &str) {
    assert_eq!(
        next_json(socket).await,
        json!({"type": "welcome", "user": "alice", "via": via})
    );
    assert_echo(socket, "echo me").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_contract() {
    let demo = start().await;
    let page = http(demo.addr, "GET", "/", &[], "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<html"));
    let bad_login = http(
        demo.addr,
        "POST",
        "/login",
        &[("content-type", "application/json")],
        r#"{"user":"<script>"}"#,
    )
    .await;
    assert_eq!(bad_login.status, StatusCode::BAD_REQUEST);

    let (token, session) = login(&demo, "alice").await;
    let bearer = format!("Bearer {token}");
    let mut secrets = vec![token.clone(), session.clone()];

    // Tickets.
    let ticket = http(
        demo.addr,
        "POST",
        "/ws-ticket",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(ticket.status, StatusCode::OK);
    assert_eq!(ticket.headers["cache-control"], "no-store");
    assert_eq!(ticket.json()["expires_in"], 30);
    let ticket = ticket.json()["ticket"].as_str().unwrap().to_owned();
    secrets.push(ticket.clone());
    assert_eq!(
        http(demo.addr, "POST", "/ws-ticket", &[], "").await.status,
        StatusCode::UNAUTHORIZED
    );

    // /ws, each way in.
    let (mut socket, _) = connect(demo.addr, "/ws", &[("authorization", &bearer)])
        .await
        .unwrap();
    welcome(&mut socket, "header").await;
    let (mut socket, _) = connect(demo.addr, &format!("/ws?ticket={ticket}"), &[])
        .await
        .unwrap();
    welcome(&mut socket, "ticket").await;
    let reused = refused(demo.addr, &format!("/ws?ticket={ticket}"), &[]).await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED);
    let cookie = format!("session={session}");
    let (mut socket, _) = connect(
        demo.addr,
        "/ws",
        &[("cookie", &cookie), ("origin", &demo.origin)],
    )
    .await
    .unwrap();
    welcome(&mut socket, "cookie").await;
    let offered = format!("bearer.{token}, chat");
    let (mut socket, headers) = connect(demo.addr, "/ws", &[("sec-websocket-protocol", &offered)])
        .await
        .unwrap();
    assert_eq!(headers["sec-websocket-protocol"], "chat");
    welcome(&mut socket, "subprotocol").await;

    // Explicit credentials before the ambient cookie: with a valid session
    // cookie and an allowed Origin sent too, the subprotocol token decides...
    let with_cookie = [
        ("cookie", cookie.as_str()),
        ("origin", demo.origin.as_str()),
    ];
    let (mut socket, headers) = connect(
        demo.addr,
        "/ws",
        &[&with_cookie[..], &[("sec-websocket-protocol", &offered)]].concat(),
    )
    .await
    .unwrap();
    assert_eq!(headers["sec-websocket-protocol"], "chat");
    welcome(&mut socket, "subprotocol").await;
    // ...and a bad explicit credential is refused, never rescued by the cookie.
    let used_ticket = format!("/ws?ticket={ticket}");
    let bad_explicit: [(&str, &[(&str, &str)]); 3] = [
        (
            "/ws",
            &[("sec-websocket-protocol", "bearer.not-a-jwt, chat")],
        ),
        ("/ws", &[("authorization", "Bearer not-a-jwt")]),
        (&used_ticket, &[]),
    ];
    for (path, explicit) in bad_explicit {
        let refusal = refused(demo.addr, path, &[&with_cookie[..], explicit].concat()).await;
        assert_eq!(refusal.status, StatusCode::UNAUTHORIZED, "{explicit:?}");
    }

    // /ws refusals.
    assert_eq!(
        refused(demo.addr, "/ws", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    for value in ["", "Bearer", "Token abc", "Bearer not-a-jwt"] {
        let refusal = refused(demo.addr, "/ws", &[("authorization", value)]).await;
        assert_eq!(refusal.status, StatusCode::UNAUTHORIZED, "{value:?}");
    }
    let cross_site = refused(
        demo.addr,
        "/ws",
        &[("cookie", &cookie), ("origin", "http://evil.test")],
    )
    .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);

    // /ws/first-message.
    let (mut socket, _) = connect(demo.addr, "/ws/first-message", &[]).await.unwrap();
    socket
        .send(Message::text(
            json!({"type": "auth", "token": token}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "auth_ok", "userId": "alice"})
    );
    assert_echo(&mut socket, "after auth").await;
    let (mut socket, _) = connect(demo.addr, "/ws/first-message", &[]).await.unwrap();
    socket
        .send(Message::text(r#"{"type":"auth","token":"forged"}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await, json!({"type": "auth_fail"}));
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(2)).await,
        Some(4001)
    );
    let (mut socket, _) = connect(demo.addr, "/ws/first-message", &[]).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(7)).await,
        Some(4001)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(4900) && waited < Duration::from_millis(5600),
        "{waited:?}"
    );
    let cross_site = refused(
        demo.addr,
        "/ws/first-message",
        &[("origin", "http://evil.test")],
    )
    .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);

    // Every request was logged, with no credential in the log.
    let logs = log_text();
    assert!(
        logs.contains("uri=/ws?ticket=[redacted]"),
        "the ticket upgrade was logged, redacted"
    );
    assert!(logs.contains("status=403"), "refusals are logged");
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a credential reached the demo's log"
        );
    }
}

/// With `REDIS_URL`, the demo keeps its tickets in Redis.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_issues_and_redeems_tickets_through_redis() {
    let (url, _server) = shared_redis();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = demo::router(demo::Config {
        jwt_secret: demo::random_secret(),
        allowed_origins: vec![format!("http://127.0.0.1:{}", addr.port())],
        redis_url: Some(url.clone()),
        max_sessions: demo::MAX_SESSIONS,
    })
    .unwrap();
    tokio::spawn(demo::serve(listener, router, demo::HEADER_READ_TIMEOUT));
    let demo = Demo {
        addr,
        origin: String::new(),
    };
    let (token, _) = login(&demo, "alice").await;
    let ticket = issue_ticket(addr, &token).await;

    // The ticket is in Redis, filed under its hash, not its value.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("ws-ticket:*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| !k.contains(&ticket)));

    let (mut socket, _) = connect(addr, &format!("/ws?ticket={ticket}"), &[])
        .await
        .unwrap();
    welcome(&mut socket, "ticket").await;
    let reused = refused(addr, &format!("/ws?ticket={ticket}"), &[]).await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED);
}

/// Near-miss spellings of `ticket` (case, encodings, other separators) are
/// refused, and their values never reach the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_miss_ticket_spellings_never_reach_the_log() {
    let demo = start().await;
    let cases = [
        ("/ws?Ticket=SECRET1", "SECRET1"),
        ("/ws?TICKET=SECRET2", "SECRET2"),
        ("/ws?ticket%3DSECRET3", "SECRET3"),
        ("/ws?x=1;ticket=SECRET4", "SECRET4"),
        ("/ws?x=1&amp;ticket=SECRET5", "SECRET5"),
        ("/ws?tick%65t=SECRET6", "SECRET6"),
    ];
    for (path, _) in cases {
        let refusal = refused(demo.addr, path, &[]).await;
        assert_eq!(refusal.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let logs = log_text();
    for (path, secret) in cases {
        assert!(
            !logs.contains(secret),
            "{path}: the value reached the demo's log"
        );
    }
}

/// `/ws/first-message` accepts an auth message of up to 64 KiB, and ends a
/// socket whose first message is larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_message_size_cap() {
    let demo = start().await;
    let (token, _) = login(&demo, "alice").await;
    let padded = |len: usize| {
        let head = json!({"type": "auth", "token": token}).to_string();
        let pad = "x".repeat(len - head.len() - r#","pad":"""#.len());
        let message = format!(r#"{},"pad":"{pad}"}}"#, &head[..head.len() - 1]);
        assert_eq!(message.len(), len);
        assert!(serde_json::from_str::<serde_json::Value>(&message).is_ok());
        message
    };

    let (mut socket, _) = connect(demo.addr, "/ws/first-message", &[]).await.unwrap();
    socket.send(Message::text(padded(60 * 1024))).await.unwrap();
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "auth_ok", "userId": "alice"})
    );
    assert_echo(&mut socket, "after a large auth message").await;

    let (mut socket, _) = connect(demo.addr, "/ws/first-message", &[]).await.unwrap();
    // The server may close before it has read everything: a failed send is
    // a closed socket too.
    let _ = socket.send(Message::text(padded(70 * 1024))).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => panic!("the socket stayed open after a 70 KiB first message"),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => break,
            Ok(Some(Ok(Message::Text(text)))) => {
                assert!(!text.contains("auth_ok"), "a 70 KiB auth message: {text}")
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A client that never completes its request head is disconnected, however
/// it stalls: before sending anything, partway through the HTTP/2 preface, or
/// partway through an HTTP/1.1 head, whether silent or trickling. Sockets and
/// connections that did send a request are not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_request_head_is_dropped() {
    let timeout = Duration::from_secs(1);
    let demo = start_with(timeout, demo::MAX_SESSIONS).await;
    let (token, _) = login(&demo, "alice").await;
    let bearer = format!("Bearer {token}");
    let (mut socket, _) = connect(demo.addr, "/ws", &[("authorization", &bearer)])
        .await
        .unwrap();
    welcome(&mut socket, "header").await;

    let stalls: [(&[u8], bool); 4] = [
        (b"", false),
        (b"PRI * HTTP/2.0\r\n", false),
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n", false),
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n", true),
    ];
    let clients = stalls.map(|(head, trickle)| {
        let addr = demo.addr;
        tokio::spawn(async move {
            let started = Instant::now();
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut read, mut write) = stream.into_split();
            write.write_all(head).await.unwrap();
            // The write half is held open (never shut down) until the read
            // half sees the server close.
            let writer = tokio::spawn(async move {
                while trickle && write.write_all(b"X-Slow: 1\r\n").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                std::future::pending::<()>().await;
            });
            let mut received = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut received))
                    .await
                    .is_ok();
            writer.abort();
            (closed, started.elapsed())
        })
    });
    for (client, (head, trickle)) in clients.into_iter().zip(stalls) {
        let (closed, after) = client.await.unwrap();
        let head = String::from_utf8_lossy(head);
        assert!(closed, "{head:?} (trickle: {trickle}) still connected");
        assert!(
            after >= timeout - Duration::from_millis(50),
            "{head:?} (trickle: {trickle}) dropped after {after:?}, before the timeout"
        );
    }

    // The server carries on, and the socket opened before is still up.
    assert_eq!(
        http(demo.addr, "GET", "/", &[], "").await.status,
        StatusCode::OK
    );
    assert_echo(&mut socket, "still here").await;
}

/// The session store is bounded: past the cap, the oldest session is gone
/// and the newest still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_session_is_dropped_at_the_cap() {
    let cap = 20;
    let demo = start_with(demo::HEADER_READ_TIMEOUT, cap).await;
    let mut sessions = Vec::new();
    for _ in 0..=cap {
        sessions.push(login(&demo, "alice").await.1);
    }
    let cookie = |session: &str| format!("session={session}");
    let oldest = cookie(&sessions[0]);
    let refusal = refused(
        demo.addr,
        "/ws",
        &[("cookie", &oldest), ("origin", &demo.origin)],
    )
    .await;
    assert_eq!(refusal.status, StatusCode::UNAUTHORIZED);
    for session in [&sessions[1], &sessions[cap]] {
        let (mut socket, _) = connect(
            demo.addr,
            "/ws",
            &[("cookie", &cookie(session)), ("origin", &demo.origin)],
        )
        .await
        .unwrap();
        welcome(&mut socket, "cookie").await;
    }
}

/// `POST /logout` with `Authorization: <bearer>`: the status.
async fn logout_with(addr: SocketAddr, bearer: &str) -> StatusCode {
    http(addr, "POST", "/logout", &[("authorization", bearer)], "")
        .await
        .status
}

/// The status of a `/ws` upgrade with `Authorization: <bearer>` that must be
/// refused.
async fn refused_bearer(addr: SocketAddr, bearer: &str) -> StatusCode {
    refused(addr, "/ws", &[("authorization", bearer)])
        .await
        .status
}

/// Every way into `/ws`, open at once for `token`/`session`: header,
/// ticket, subprotocol, cookie.
async fn every_socket(demo: &Demo, token: &str, session: &str) -> Vec<Client> {
    let bearer = format!("Bearer {token}");
    let ticket = issue_ticket(demo.addr, token).await;
    let sub = format!("bearer.{token}, chat");
    let cookie = format!("session={session}");
    let mut sockets = Vec::new();
    for (path, headers) in [
        ("/ws".to_owned(), vec![("authorization", bearer.as_str())]),
        (format!("/ws?ticket={ticket}"), vec![]),
        (
            "/ws".to_owned(),
            vec![("sec-websocket-protocol", sub.as_str())],
        ),
        (
            "/ws".to_owned(),
            vec![
                ("cookie", cookie.as_str()),
                ("origin", demo.origin.as_str()),
            ],
        ),
    ] {
        let (mut socket, _) = connect(demo.addr, &path, &headers).await.unwrap();
        assert_eq!(next_json(&mut socket).await["type"], "welcome");
        sockets.push(socket);
    }
    sockets
}

/// `POST /logout` with a bearer token logs its user out everywhere: every
/// open socket closes with 4003 within 500 ms, the old credentials are
/// refused, a login right after works at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_closes_every_socket() {
    let demo = start().await;
    let (token, session) = login(&demo, "alice").await;
    let (other_token, _) = login(&demo, "bob").await;
    let mut sockets = every_socket(&demo, &token, &session).await;
    let (mut bob, _) = connect(
        demo.addr,
        "/ws",
        &[("authorization", &format!("Bearer {other_token}"))],
    )
    .await
    .unwrap();
    assert_eq!(next_json(&mut bob).await["type"], "welcome");

    let started = Instant::now();
    let bearer = format!("Bearer {token}");
    assert_eq!(
        logout_with(demo.addr, &bearer).await,
        StatusCode::NO_CONTENT
    );
    for socket in &mut sockets {
        assert_eq!(close_code(socket, Duration::from_secs(5)).await, Some(4003));
    }
    let took = started.elapsed();
    println!("every socket closed {took:?} after the logout");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_echo(&mut bob, "bob is still here").await;

    // The old credentials are refused everywhere.
    assert_eq!(
        refused_bearer(demo.addr, &bearer).await,
        StatusCode::UNAUTHORIZED
    );
    let cookie = format!("session={session}");
    let by_cookie = refused(
        demo.addr,
        "/ws",
        &[("cookie", &cookie), ("origin", &demo.origin)],
    )
    .await;
    assert_eq!(by_cookie.status, StatusCode::UNAUTHORIZED);
    let ticket = http(
        demo.addr,
        "POST",
        "/ws-ticket",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(ticket.status, StatusCode::UNAUTHORIZED);

    // A login right after, in the same second, works at once.
    let (fresh, fresh_session) = login(&demo, "alice").await;
    every_socket(&demo, &fresh, &fresh_session).await;
}

/// `POST /logout` with only the session cookie ends that session: its
/// sockets close with 4003, another login of the same user goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_with_the_cookie_ends_that_session() {
    let demo = start().await;
    let (token, session) = login(&demo, "alice").await;
    let (other_token, other_session) = login(&demo, "alice").await;
    let mut sockets = every_socket(&demo, &token, &session).await;
    let mut others = every_socket(&demo, &other_token, &other_session).await;

    let cookie = format!("session={session}");
    let logout = http(demo.addr, "POST", "/logout", &[("cookie", &cookie)], "").await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    for socket in &mut sockets {
        assert_eq!(close_code(socket, Duration::from_secs(5)).await, Some(4003));
    }
    for socket in &mut others {
        assert_echo(socket, "the other login goes on").await;
    }
    let by_cookie = refused(
        demo.addr,
        "/ws",
        &[("cookie", &cookie), ("origin", &demo.origin)],
    )
    .await;
    assert_eq!(by_cookie.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        http(demo.addr, "POST", "/logout", &[], "").await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Two demo instances sharing `REDIS_URL`: a logout on one closes the
/// sockets on the other within 500 ms.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_reaches_sockets_on_another_instance_through_redis() {
    let (url, _server) = shared_redis();
    let secret = demo::random_secret();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = format!("http://127.0.0.1:{}", addr.port());
        let router = demo::router(demo::Config {
            jwt_secret: secret.clone(),
            allowed_origins: vec![origin.clone()],
            redis_url: Some(url.clone()),
            max_sessions: demo::MAX_SESSIONS,
        })
        .unwrap();
        tokio::spawn(demo::serve(listener, router, demo::HEADER_READ_TIMEOUT));
        instances.push(Demo { addr, origin });
    }
    let (a, b) = (&instances[0], &instances[1]);
    // A user of its own: the revocation lives in the shared Redis, which
    // other tests use at the same time.
    let (token, _) = login(a, "redis-logout-user").await;
    let bearer = format!("Bearer {token}");
    // Both instances subscribe in the background: wait until B accepts.
    let mut on_b = None;
    for _ in 0..200 {
        if let Ok((socket, _)) = connect(b.addr, "/ws", &[("authorization", &bearer)]).await {
            on_b = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut on_b = on_b.expect("instance B accepts the token");
    assert_eq!(next_json(&mut on_b).await["type"], "welcome");

    let started = Instant::now();
    let mut logout = http(a.addr, "POST", "/logout", &[("authorization", &bearer)], "").await;
    for _ in 0..200 {
        if logout.status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        logout = http(a.addr, "POST", "/logout", &[("authorization", &bearer)], "").await;
    }
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert_eq!(
        close_code(&mut on_b, Duration::from_secs(5)).await,
        Some(4003)
    );
    let took = started.elapsed();
    println!("closed on the other instance {took:?} after the logout");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(
        refused_bearer(b.addr, &bearer).await,
        StatusCode::UNAUTHORIZED
    );
}

/// A login right after a logout works at once, every time: the logout
/// answers only once the clock has left its millisecond, and token issue
/// times are read back exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_right_after_a_logout_works_every_time() {
    let demo = start().await;
    for round in 0..40 {
        let (token, _) = login(&demo, "erin").await;
        let bearer = format!("Bearer {token}");
        assert_eq!(
            logout_with(demo.addr, &bearer).await,
            StatusCode::NO_CONTENT
        );
        let (fresh, _) = login(&demo, "erin").await;
        let fresh = format!("Bearer {fresh}");
        match connect(demo.addr, "/ws", &[("authorization", &fresh)]).await {
            Ok((mut socket, _)) => assert_eq!(next_json(&mut socket).await["type"], "welcome"),
            Err(refused) => panic!("round {round}: the fresh login was refused: {refused:?}"),
        }
        assert_eq!(
            refused_bearer(demo.addr, &bearer).await,
            StatusCode::UNAUTHORIZED
        );
    }
}

/// `/logout` reads the session cookie exactly as `/ws` does, and a token in
/// any query parameter or path segment stays out of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_reads_cookies_as_ws_does_and_tokens_elsewhere_stay_out_of_the_log() {
    let demo = start().await;
    let (token, session) = login(&demo, "frank").await;
    let encoded = format!("sess%69on={session}");
    let (mut socket, _) = connect(
        demo.addr,
        "/ws",
        &[("cookie", &encoded), ("origin", &demo.origin)],
    )
    .await
    .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "welcome");
    let logout = http(demo.addr, "POST", "/logout", &[("cookie", &encoded)], "").await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(5)).await,
        Some(4003)
    );
    let twice = format!("session={session}; session={session}");
    let ambiguous = http(demo.addr, "POST", "/logout", &[("cookie", &twice)], "").await;
    assert_eq!(ambiguous.status, StatusCode::BAD_REQUEST);

    for path in [
        format!("/ws?access_token={token}"),
        format!("/ws?token={token}"),
        format!("/ws?x={token}"),
        format!("/ws/{token}"),
    ] {
        let _ = refused(demo.addr, &path, &[]).await;
    }
    // Each refusal is logged before its response is written.
    let logs = log_text();
    assert!(
        logs.contains("access_token=[redacted]"),
        "the upgrades were logged"
    );
    assert!(!logs.contains(&token), "a token reached the log");
}
