//! The cost of authentication on the request path, each measured beside its
//! baseline in the same run: source extraction vs a bare header/query lookup,
//! the whole layer vs `jsonwebtoken::decode` on the same token, ticket issue +
//! redeem vs generating and hashing a ticket.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::request::Parts;
use http::{Request, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sha2::{Digest, Sha256};
use tower::Layer;
use tower_service::Service;
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
use tower_ws_auth::source::{Bearer, Cookie, CredentialSource, Query, Subprotocol};
use tower_ws_auth::ticket::{MemoryTicketStore, Ticket, TicketStore};
use tower_ws_auth::{Credential, SourceKind, Verification, Verified, WsAuthLayer};

const SECRET: &[u8] = b"benchmark-secret-of-thirty-two-b";

fn key(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn claims() -> BasicClaims {
    BasicClaims {
        sub: "alice".into(),
        exp: tower_ws_auth::jwt::now_secs() + 3600,
    }
}

fn upgrade() -> http::request::Builder {
    Request::get("/ws?room=general&x=1")
        .header("host", "chat.example")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0")
}

fn parts(builder: http::request::Builder) -> Parts {
    builder.body(()).unwrap().into_parts().0
}

/// Poll a future that completes without waiting, once.
fn now<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the future was expected to complete at once"),
    }
}

fn sources(c: &mut Criterion) {
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.signaturesignaturesignaturesignature00000";
    let ticket = "uPPv1uaKePGbpLdKNB5Ej_y2m87tuL5CT7B7AFmb5ec";
    let mut group = c.benchmark_group("source");

    let query = parts(Request::get(format!(
        "/ws?room=general&ticket={ticket}&x=1"
    )));
    group.bench_function("query/baseline: uri.query() lookup", |b| {
        b.iter_batched_ref(
            || query.clone(),
            |p| {
                black_box(p.uri.query().and_then(|q| {
                    q.split('&')
                        .find(|kv| kv.starts_with("ticket="))
                        .map(str::len)
                }))
            },
            BatchSize::SmallInput,
        )
    });
    let source = Query::param("ticket");
    group.bench_function("query/extract+strip", |b| {
        b.iter_batched_ref(
            || query.clone(),
            |p| black_box(source.extract(p)),
            BatchSize::SmallInput,
        )
    });

    let cookies = parts(upgrade().header(
        "cookie",
        format!("_ga=GA1.1.1234567890.1700000000; theme=dark; lang=en-GB; session={ticket}; consent=yes; _gid=GA1.1.987"),
    ));
    group.bench_function("cookie/baseline: headers.get(cookie)", |b| {
        b.iter_batched_ref(
            || cookies.clone(),
            |p| black_box(p.headers.get("cookie").map(|v| v.len())),
            BatchSize::SmallInput,
        )
    });
    let pair = format!("session={ticket}");
    group.bench_function("cookie/the cookie crate parsing the one named pair", |b| {
        b.iter(|| {
            black_box(cookie::Cookie::parse(black_box(pair.as_str())).map(|c| c.value().len()))
        })
    });
    let source = Cookie::named("session");
    group.bench_function("cookie/extract+strip (6 cookies)", |b| {
        b.iter_batched_ref(
            || cookies.clone(),
            |p| black_box(source.extract(p)),
            BatchSize::SmallInput,
        )
    });

    let bearer = parts(upgrade().header("authorization", format!("Bearer {token}")));
    group.bench_function("bearer/baseline: headers.get(authorization)", |b| {
        b.iter_batched_ref(
            || bearer.clone(),
            |p| black_box(p.headers.get("authorization").map(|v| v.len())),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("bearer/extract+strip", |b| {
        b.iter_batched_ref(
            || bearer.clone(),
            |p| black_box(Bearer.extract(p)),
            BatchSize::SmallInput,
        )
    });

    let sub = parts(upgrade().header("sec-websocket-protocol", format!("bearer.{token}, chat")));
    group.bench_function(
        "subprotocol/baseline: headers.get(sec-websocket-protocol)",
        |b| {
            b.iter_batched_ref(
                || sub.clone(),
                |p| black_box(p.headers.get("sec-websocket-protocol").map(|v| v.len())),
                BatchSize::SmallInput,
            )
        },
    );
    let source = Subprotocol::prefix("bearer.");
    group.bench_function("subprotocol/extract+strip", |b| {
        b.iter_batched_ref(
            || sub.clone(),
            |p| black_box(source.extract(p)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

type Inner = tower::util::ServiceFn<fn(Request<()>) -> Ready<Result<Response<String>, Infallible>>>;

fn inner() -> Inner {
    fn ok(_req: Request<()>) -> Ready<Result<Response<String>, Infallible>> {
        ready(Ok(Response::new(String::new())))
    }
    tower::service_fn(ok as fn(Request<()>) -> Ready<Result<Response<String>, Infallible>>)
}

fn layer_vs_decode(
    c: &mut Criterion,
    name: &str,
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
) {
    tower_ws_auth::jwt::install_crypto_provider().unwrap();
    let token = jsonwebtoken::encode(&Header::new(alg), &claims(), &encoding).unwrap();
    let mut validation = Validation::new(alg);
    validation.leeway = 5;
    validation.validate_nbf = true;
    let verifier = JwtVerifier::<BasicClaims>::new(decoding.clone(), [alg]).unwrap();
    let mut service = WsAuthLayer::new(Bearer, verifier).layer(inner());
    let request = || {
        upgrade()
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
    };

    let mut group = c.benchmark_group(format!("layer/{name}"));
    // The work without this crate: decode the token, hand the request to the
    // same inner service.
    let mut bare = inner();
    group.bench_function("baseline: jsonwebtoken::decode + inner service", |b| {
        b.iter_batched(
            request,
            |req| {
                let claims =
                    jsonwebtoken::decode::<BasicClaims>(black_box(&token), &decoding, &validation)
                        .unwrap();
                black_box(claims);
                black_box(now(bare.call(req)).unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("WsAuthLayer on the upgrade request", |b| {
        b.iter_batched(
            request,
            |req| {
                let response = now(service.call(req)).unwrap();
                assert_eq!(response.status(), 200);
                black_box(response)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn accepted() -> Result<Verified<BasicClaims>, tower_ws_auth::AuthError> {
    Ok(Verified::new(BasicClaims {
        sub: "alice".into(),
        exp: 0,
    }))
}

/// Accepts every credential at once, without cryptography, as a JWT
/// verifier would after its signature check.
#[derive(Clone)]
struct Accept;

impl tower_ws_auth::Verifier for Accept {
    type Identity = BasicClaims;
    type Future = Ready<Result<Verified<BasicClaims>, tower_ws_auth::AuthError>>;

    fn verify(&self, _credential: Credential) -> Self::Future {
        ready(accepted())
    }

    fn verify_now(&self, _credential: Credential) -> Verification<Self::Future, BasicClaims> {
        Verification::Ready(accepted())
    }
}

/// The layer with a verifier that does no cryptography, against the bare
/// inner service: what the layer itself costs, on the immediate path (JWT,
/// memory tickets) and on the asynchronous one (closures, Redis).
fn layer_alone(c: &mut Criterion) {
    fn accept(_c: Credential) -> Ready<Result<Verified<BasicClaims>, tower_ws_auth::AuthError>> {
        ready(accepted())
    }
    let request = || {
        upgrade()
            .header("authorization", "Bearer opaque-session-token-0123456789")
            .body(())
            .unwrap()
    };
    let mut group = c.benchmark_group("layer/no-crypto");
    let mut bare = inner();
    group.bench_function("baseline: inner service alone", |b| {
        b.iter_batched(
            request,
            |req| black_box(now(bare.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    let mut immediate = WsAuthLayer::new(Bearer, Accept).layer(inner());
    group.bench_function("WsAuthLayer, immediate verifier", |b| {
        b.iter_batched(
            request,
            |req| black_box(now(immediate.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    let mut later = WsAuthLayer::new(Bearer, accept).layer(inner());
    group.bench_function("WsAuthLayer, closure verifier (asynchronous path)", |b| {
        b.iter_batched(
            request,
            |req| black_box(now(later.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn layer(c: &mut Criterion) {
    layer_alone(c);
    layer_vs_decode(
        c,
        "HS256",
        Algorithm::HS256,
        EncodingKey::from_secret(SECRET),
        DecodingKey::from_secret(SECRET),
    );
    layer_vs_decode(
        c,
        "RS256",
        Algorithm::RS256,
        EncodingKey::from_rsa_pem(&key("rsa_private.pem")).unwrap(),
        DecodingKey::from_rsa_pem(&key("rsa_public.pem")).unwrap(),
    );
    layer_vs_decode(
        c,
        "ES256",
        Algorithm::ES256,
        EncodingKey::from_ec_pem(&key("ec_private.pem")).unwrap(),
        DecodingKey::from_ec_pem(&key("ec_public.pem")).unwrap(),
    );
    layer_vs_decode(
        c,
        "EdDSA",
        Algorithm::EdDSA,
        EncodingKey::from_ed_pem(&key("ed_private.pem")).unwrap(),
        DecodingKey::from_ed_pem(&key("ed_public.pem")).unwrap(),
    );
}

fn issue_and_redeem(store: &MemoryTicketStore<String>, user: &str) {
    let issued = now(store.issue(Verified::new(user.to_owned()), Duration::from_secs(30))).unwrap();
    let credential = Credential::new(SourceKind::Query, issued.ticket.expose_secret());
    black_box(now(store.redeem(credential)).unwrap());
}

fn tickets(c: &mut Criterion) {
    let mut group = c.benchmark_group("ticket");
    group.bench_function("baseline: generate + SHA-256 (the unavoidable part)", |b| {
        b.iter(|| {
            let ticket = Ticket::generate().unwrap();
            black_box(Sha256::digest(ticket.expose_secret().as_bytes()))
        })
    });
    let store = MemoryTicketStore::<String>::new();
    group.bench_function("memory issue+redeem, 1 thread", |b| {
        b.iter(|| issue_and_redeem(&store, "alice"))
    });
    group.bench_function("memory issue+redeem, 2 threads (time per op)", |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(2);
            let started = Instant::now();
            thread::scope(|s| {
                for t in 0..2 {
                    let store = &store;
                    s.spawn(move || {
                        let user = format!("user{t}");
                        for _ in 0..per_thread {
                            issue_and_redeem(store, &user);
                        }
                    });
                }
            });
            started.elapsed() / 2
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = sources, layer, tickets
}
criterion_main!(benches);
