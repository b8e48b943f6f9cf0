//! Verification through the OpenID key cache against `JwtVerifier` with the
//! same key, the same validation and the same token, in the same run; the key
//! choice on its own; and both on two threads, to show that reading the key
//! cache takes no lock.

use std::hint::black_box;
use std::thread;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{encode, Algorithm, DecodingKey, EncodingKey, Header};
use tower_ws_auth::jwt::{now_secs, BasicClaims, JwtVerifier};
use tower_ws_auth::oidc::OidcVerifier;
use tower_ws_auth::{Credential, SourceKind, Verification, Verifier};

const ISSUER: &str = "https://id.example";
const AUDIENCE: &str = "chat-api";

fn key(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

struct Pair {
    jwt: JwtVerifier<BasicClaims>,
    oidc: OidcVerifier<BasicClaims>,
    token: String,
}

/// A `JwtVerifier` and an `OidcVerifier` holding the same public key (the
/// JWT verifier's built from the same JWK), and a token both accept.
fn pair(alg: Algorithm, signing: EncodingKey) -> Pair {
    let mut jwk = Jwk::from_encoding_key(&signing, alg).unwrap();
    jwk.common.key_id = Some("bench-key".into());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let jwks = serde_json::json!({ "keys": [jwk, {"kty": "RSA", "kid": "enc-key", "use": "enc", "n": "AQAB", "e": "AQAB"}] });
    let jwt = JwtVerifier::<BasicClaims>::new(DecodingKey::from_jwk(&jwk).unwrap(), [alg])
        .unwrap()
        .audience(&[AUDIENCE])
        .issuer(&[ISSUER]);
    let oidc = OidcVerifier::<BasicClaims>::builder()
        .jwks(ISSUER, jwks.to_string())
        .audience(&[AUDIENCE])
        .algorithms([alg])
        .build()
        .unwrap();
    let mut header = Header::new(alg);
    header.kid = Some("bench-key".into());
    header.typ = Some("at+jwt".into());
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now_secs() + 3600,
        "iat": now_secs(), "jti": "a1b2c3d4e5f6", "client_id": "chat-web", "scope": "chat",
    });
    let token = encode(&header, &claims, &signing).unwrap();
    assert!(jwt.verify_token(&token).is_ok());
    assert!(oidc.verify_token(&token).is_ok());
    // The request path: decided at once, no future to await.
    assert!(matches!(
        oidc.verify_now(Credential::new(SourceKind::Header, &token)),
        Verification::Ready(Ok(_))
    ));
    Pair { jwt, oidc, token }
}

/// Run `op` `iters` times split over two threads: wall time per operation.
fn two_threads(iters: u64, op: impl Fn() + Sync) -> std::time::Duration {
    let per_thread = iters.div_ceil(2);
    let started = Instant::now();
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..per_thread {
                    op();
                }
            });
        }
    });
    started.elapsed() / 2
}

fn verification(c: &mut Criterion) {
    tower_ws_auth::jwt::install_crypto_provider().unwrap();
    let rsa = pair(
        Algorithm::RS256,
        EncodingKey::from_rsa_pem(&key("rsa_private.pem")).unwrap(),
    );
    let ed = pair(
        Algorithm::EdDSA,
        EncodingKey::from_ed_pem(&key("ed_private.pem")).unwrap(),
    );

    let mut group = c.benchmark_group("oidc");
    for (name, p) in [("RS256", &rsa), ("EdDSA", &ed)] {
        group.bench_function(format!("{name}/JwtVerifier (baseline)"), |b| {
            b.iter(|| black_box(p.jwt.verify_token(black_box(&p.token))).is_ok())
        });
        group.bench_function(format!("{name}/OidcVerifier through the key cache"), |b| {
            b.iter(|| black_box(p.oidc.verify_token(black_box(&p.token))).is_ok())
        });
    }

    // A header the key set has not verified before is decoded and parsed to
    // choose the key; a token naming an encryption key is refused right there,
    // before any signature check, which isolates that cost. (Headers seen
    // before skip it: the two-verifier comparison above is that path.)
    let rest = rsa.token.split_once('.').unwrap().1;
    let mut refused_header = Header::new(Algorithm::RS256);
    refused_header.kid = Some("enc-key".into());
    refused_header.typ = Some("at+jwt".into());
    let refused = format!(
        "{}.{rest}",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&refused_header).unwrap()
        )
    );
    assert!(rsa.oidc.verify_token(&refused).is_err());
    group.bench_function(
        "new header: decode + key choice (refused before the signature)",
        |b| b.iter(|| black_box(rsa.oidc.verify_token(black_box(&refused))).is_err()),
    );
    group.bench_function(
        "new header: decode + key choice, 2 threads (time per op)",
        |b| {
            b.iter_custom(|iters| {
                two_threads(iters, || {
                    black_box(rsa.oidc.verify_token(black_box(&refused)).is_err());
                })
            })
        },
    );
    group.bench_function("EdDSA/JwtVerifier, 2 threads (time per op)", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(ed.jwt.verify_token(black_box(&ed.token)).is_ok());
            })
        })
    });
    group.bench_function("EdDSA/OidcVerifier, 2 threads (time per op)", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(ed.oidc.verify_token(black_box(&ed.token)).is_ok());
            })
        })
    });
    group.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
