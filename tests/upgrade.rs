//! The upgrade layer over loopback, with a real WebSocket client: every
//! source accepted with the right identity, every kind of bad request refused
//! with the status a client sees.
#![cfg(all(feature = "axum", feature = "jwt", feature = "rust-crypto"))]

mod common;

use std::future::{ready, Ready};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use common::*;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode, Uri};
use jsonwebtoken::{encode, Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::json;
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
use tower_ws_auth::source::{Bearer, Cookie, Query, Subprotocol};
use tower_ws_auth::{
    AuthError, AuthErrorKind, Authenticated, Credential, OriginPolicy, Verified, WsAuthLayer,
};

const AUD: &str = "ws-tests";
const ISS: &str = "tower-ws-auth-tests";

fn claims(sub: &str, ttl: i64) -> serde_json::Value {
    json!({ "sub": sub, "exp": now() as i64 + ttl, "aud": AUD, "iss": ISS })
}

fn good(sub: &str) -> String {
    hs256(&claims(sub, 300), SECRET)
}

fn jwt() -> JwtVerifier<BasicClaims> {
    JwtVerifier::<BasicClaims>::hs256(SECRET)
        .unwrap()
        .audience(&[AUD])
        .issuer(&[ISS])
}

fn sessions(credential: Credential) -> Ready<Result<Verified<BasicClaims>, AuthError>> {
    ready(match credential.expose_secret() {
        "s-alice" => Ok(Verified::new(BasicClaims {
            sub: "alice".into(),
            exp: u64::MAX,
        })),
        "s-down" => Err(AuthError::unavailable(std::io::Error::other(
            "session store unreachable",
        ))),
        _ => Err(AuthErrorKind::Invalid.into()),
    })
}

/// Tells the client who it is and everything the handler saw.
async fn report(
    upgrade: WebSocketUpgrade,
    auth: Authenticated<BasicClaims>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("?").to_owned())
    };
    let seen = json!({
        "user": auth.identity.sub,
        "via": auth.via.as_str(),
        "uri": uri.to_string(),
        "authorization": header("authorization"),
        "cookie": header("cookie"),
        "protocols": header("sec-websocket-protocol"),
    });
    upgrade
        .protocols(["chat"])
        .on_upgrade(move |mut socket| async move {
            let _ = socket.send(Message::text(seen.to_string())).await;
            while let Some(Ok(Message::Text(text))) = socket.next().await {
                let _ = socket.send(Message::Text(text)).await;
            }
        })
}

fn app() -> Router {
    let layer = WsAuthLayer::new(Bearer, jwt())
        .or(Query::param("token"), jwt())
        .or(Cookie::named("session"), sessions)
        .or(Subprotocol::prefix("bearer."), jwt())
        .origin(OriginPolicy::allow(["http://app.test"]).unwrap());
    Router::new()
        .route("/ws", get(report))
        .route("/plain", get(|| async { "plain" }))
        .layer(layer)
}

async fn server() -> std::net::SocketAddr {
    serve(app()).await
}

#[tokio::test]
async fn header_source_accepts_and_hides_the_token() {
    let addr = server().await;
    let token = good("alice");
    let bearer = format!("Bearer {token}");
    let (mut socket, _) = connect(addr, "/ws", &[("authorization", &bearer)])
        .await
        .unwrap();
    let seen = next_json(&mut socket).await;
    assert_eq!(seen["user"], "alice");
    assert_eq!(seen["via"], "header");
    assert_eq!(seen["authorization"], serde_json::Value::Null);
    assert_echo(&mut socket, "hi").await;
}

#[tokio::test]
async fn query_source_accepts_and_strips_only_its_parameter() {
    let addr = server().await;
    let path = format!("/ws?room=7&token={}&x=%20y", good("bob"));
    let (mut socket, _) = connect(addr, &path, &[]).await.unwrap();
    let seen = next_json(&mut socket).await;
    assert_eq!(seen["user"], "bob");
    assert_eq!(seen["via"], "query");
    assert_eq!(seen["uri"], "/ws?room=7&x=%20y");
}

#[tokio::test]
async fn cookie_source_accepts_same_origin_and_native_clients() {
    let addr = server().await;
    for origin in [Some("http://app.test"), None] {
        let mut headers = vec![("cookie", "theme=dark; session=s-alice; lang=en")];
        if let Some(origin) = origin {
            headers.push(("origin", origin));
        }
        let (mut socket, _) = connect(addr, "/ws", &headers).await.unwrap();
        let seen = next_json(&mut socket).await;
        assert_eq!(seen["user"], "alice");
        assert_eq!(seen["via"], "cookie");
        assert_eq!(seen["cookie"], "theme=dark; lang=en");
    }
}

#[tokio::test]
async fn cookie_from_a_cross_site_origin_is_forbidden() {
    let addr = server().await;
    let refused = refused(
        addr,
        "/ws",
        &[
            ("cookie", "session=s-alice"),
            ("origin", "http://evil.test"),
        ],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!refused.body.contains("s-alice"));
}

#[tokio::test]
async fn subprotocol_source_selects_the_real_protocol() {
    let addr = server().await;
    let offered = format!("bearer.{}, chat", good("carol"));
    let (mut socket, response_headers) =
        connect(addr, "/ws", &[("sec-websocket-protocol", &offered)])
            .await
            .unwrap();
    assert_eq!(response_headers["sec-websocket-protocol"], "chat");
    let seen = next_json(&mut socket).await;
    assert_eq!(seen["user"], "carol");
    assert_eq!(seen["via"], "subprotocol");
    assert_eq!(seen["protocols"], "chat");
}

#[tokio::test]
async fn subprotocol_token_without_a_real_protocol_is_refused() {
    let addr = server().await;
    let offered = format!("bearer.{}", good("carol"));
    let refused = refused(addr, "/ws", &[("sec-websocket-protocol", &offered)]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn missing_credential_is_401_with_a_bare_challenge() {
    let addr = server().await;
    let refused = refused(addr, "/ws", &[]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers["www-authenticate"], "Bearer");
}

fn alg_none(claims: &serde_json::Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims.to_string())
    )
}

#[tokio::test]
async fn invalid_tokens_are_401_invalid_token_from_every_source() {
    let addr = server().await;
    let other_key = b"another-secret-that-is-32-bytes!!";
    let bad_tokens = [
        ("garbage", "not.a.jwt".to_owned()),
        ("wrong key", hs256(&claims("alice", 300), other_key)),
        ("expired", hs256(&claims("alice", -120), SECRET)),
        (
            "nbf in the future",
            hs256(
                &json!({"sub": "alice", "exp": now() + 300, "nbf": now() + 120, "aud": AUD, "iss": ISS}),
                SECRET,
            ),
        ),
        (
            "wrong aud",
            hs256(
                &json!({"sub": "alice", "exp": now() + 300, "aud": "other", "iss": ISS}),
                SECRET,
            ),
        ),
        (
            "wrong iss",
            hs256(
                &json!({"sub": "alice", "exp": now() + 300, "aud": AUD, "iss": "other"}),
                SECRET,
            ),
        ),
        ("alg none", alg_none(&claims("alice", 300))),
    ];
    for (what, token) in bad_tokens {
        let bearer = format!("Bearer {token}");
        let query = format!("/ws?token={token}");
        let protocol = format!("bearer.{token}, chat");
        for (source, path, headers) in [
            ("header", "/ws", vec![("authorization", bearer.as_str())]),
            ("query", query.as_str(), vec![]),
            (
                "subprotocol",
                "/ws",
                vec![("sec-websocket-protocol", protocol.as_str())],
            ),
        ] {
            let refused = refused(addr, path, &headers).await;
            assert_eq!(
                refused.status,
                StatusCode::UNAUTHORIZED,
                "{what} via {source}"
            );
            let challenge = refused.headers["www-authenticate"].to_str().unwrap();
            assert!(
                challenge.starts_with(r#"Bearer error="invalid_token""#),
                "{what} via {source}: {challenge}"
            );
            assert!(
                !refused.body.contains(&token),
                "{what} via {source}: body echoes the token"
            );
        }
    }
    let refused = refused(addr, "/ws", &[("cookie", "session=s-mallory")]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_token_says_so_in_the_challenge() {
    let addr = server().await;
    let bearer = format!("Bearer {}", hs256(&claims("alice", -120), SECRET));
    let refused = refused(addr, "/ws", &[("authorization", &bearer)]).await;
    assert!(refused.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("expired"));
}

#[tokio::test]
async fn empty_or_non_bearer_authorization_is_invalid_not_missing() {
    let addr = server().await;
    for value in ["Basic YWxpY2U6cHc=", "Bearer", "Bearer    "] {
        let refused = refused(addr, "/ws", &[("authorization", value)]).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{value}");
        assert_eq!(
            refused.headers["www-authenticate"], r#"Bearer error="invalid_token""#,
            "{value}"
        );
    }
}

#[tokio::test]
async fn duplicated_credentials_are_400() {
    let addr = server().await;
    let (a, b) = (
        format!("Bearer {}", good("a")),
        format!("Bearer {}", good("b")),
    );
    let query = format!("/ws?token={}&token={}", good("a"), good("b"));
    let protocols = format!("bearer.{}, bearer.{}, chat", good("a"), good("b"));
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            "two authorization headers",
            "/ws",
            vec![("authorization", &a), ("authorization", &b)],
        ),
        ("two query parameters", &query, vec![]),
        (
            "two cookies",
            "/ws",
            vec![("cookie", "session=s-alice; session=s-alice")],
        ),
        (
            "two subprotocol tokens",
            "/ws",
            vec![("sec-websocket-protocol", &protocols)],
        ),
    ];
    for (what, path, headers) in cases {
        let refused = refused(addr, path, &headers).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(
            refused.headers["www-authenticate"], r#"Bearer error="invalid_request""#,
            "{what}"
        );
    }
}

#[tokio::test]
async fn oversize_credentials_are_400_before_verification() {
    let addr = server().await;
    let huge = "a".repeat(9 * 1024);
    let bearer = format!("Bearer {huge}");
    let query = format!("/ws?token={huge}");
    let cookie = format!("session={huge}");
    let protocol = format!("bearer.{huge}, chat");
    for (what, path, headers) in [
        ("header", "/ws", vec![("authorization", bearer.as_str())]),
        ("query", query.as_str(), vec![]),
        ("cookie", "/ws", vec![("cookie", cookie.as_str())]),
        (
            "subprotocol",
            "/ws",
            vec![("sec-websocket-protocol", protocol.as_str())],
        ),
    ] {
        let refused = refused(addr, path, &headers).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(refused.body, "credential too large", "{what}");
    }
}

#[tokio::test]
async fn unreachable_session_store_fails_closed_with_503() {
    let addr = server().await;
    let refused = refused(addr, "/ws", &[("cookie", "session=s-down")]).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn plain_requests_pass_untouched() {
    let addr = server().await;
    let response = http(addr, "GET", "/plain", &[], "").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body, "plain");
}

#[tokio::test]
async fn optional_mode_lets_anonymous_through_but_not_bad_tokens() {
    async fn who(upgrade: WebSocketUpgrade, auth: Option<Authenticated<BasicClaims>>) -> Response {
        let name = auth.map_or("anonymous".to_owned(), |a| a.identity.sub);
        upgrade.on_upgrade(move |mut socket| async move {
            let _ = socket.send(Message::text(name)).await;
        })
    }
    let app = Router::new()
        .route("/ws", get(who))
        .layer(WsAuthLayer::new(Bearer, jwt()).optional());
    let addr = serve(app).await;
    let (mut socket, _) = connect(addr, "/ws", &[]).await.unwrap();
    assert_eq!(next_text(&mut socket).await, "anonymous");
    let bearer = format!("Bearer {}", good("dave"));
    let (mut socket, _) = connect(addr, "/ws", &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(next_text(&mut socket).await, "dave");
    let refused = refused(addr, "/ws", &[("authorization", "Bearer nope")]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

fn public_key_app(verifier: JwtVerifier<BasicClaims>) -> Router {
    Router::new()
        .route("/ws", get(report))
        .layer(WsAuthLayer::new(Bearer, verifier))
}

fn signed(alg: Algorithm, key: &EncodingKey) -> String {
    tower_ws_auth::jwt::install_crypto_provider().unwrap();
    encode(
        &Header::new(alg),
        &json!({"sub": "erin", "exp": now() + 300}),
        key,
    )
    .unwrap()
}

#[tokio::test]
async fn rsa_ec_and_ed_keys_verify_and_hs_rs_confusion_is_refused() {
    let rsa_public = key("rsa_public.pem");
    let cases = [
        (
            Algorithm::RS256,
            DecodingKey::from_rsa_pem(&rsa_public).unwrap(),
            EncodingKey::from_rsa_pem(&key("rsa_private.pem")).unwrap(),
        ),
        (
            Algorithm::ES256,
            DecodingKey::from_ec_pem(&key("ec_public.pem")).unwrap(),
            EncodingKey::from_ec_pem(&key("ec_private.pem")).unwrap(),
        ),
        (
            Algorithm::EdDSA,
            DecodingKey::from_ed_pem(&key("ed_public.pem")).unwrap(),
            EncodingKey::from_ed_pem(&key("ed_private.pem")).unwrap(),
        ),
    ];
    for (alg, decoding, encoding) in cases {
        let addr = serve(public_key_app(
            JwtVerifier::<BasicClaims>::new(decoding, [alg]).unwrap(),
        ))
        .await;
        let bearer = format!("Bearer {}", signed(alg, &encoding));
        let (mut socket, _) = connect(addr, "/ws", &[("authorization", &bearer)])
            .await
            .unwrap_or_else(|r| panic!("{alg:?}: {r:?}"));
        assert_eq!(next_json(&mut socket).await["user"], "erin", "{alg:?}");
    }

    // The classic confusion: an HS256 token keyed with the RSA public key.
    let addr = serve(public_key_app(
        JwtVerifier::<BasicClaims>::new(
            DecodingKey::from_rsa_pem(&rsa_public).unwrap(),
            [Algorithm::RS256],
        )
        .unwrap(),
    ))
    .await;
    let forged = signed(Algorithm::HS256, &EncodingKey::from_secret(&rsa_public));
    let bearer = format!("Bearer {forged}");
    let refused = refused(addr, "/ws", &[("authorization", &bearer)]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // And the configuration that would allow it cannot be built.
    assert!(JwtVerifier::<BasicClaims>::new(
        DecodingKey::from_rsa_pem(&rsa_public).unwrap(),
        [Algorithm::RS256, Algorithm::HS256],
    )
    .is_err());
}

#[tokio::test]
async fn a_socket_stays_usable_after_authentication() {
    let addr = server().await;
    let bearer = format!("Bearer {}", good("frank"));
    let (mut socket, _) = connect(addr, "/ws", &[("authorization", &bearer)])
        .await
        .unwrap();
    next_json(&mut socket).await;
    for i in 0..20 {
        assert_echo(&mut socket, &format!("message {i}")).await;
    }
    socket.close(None).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.next()).await;
}
