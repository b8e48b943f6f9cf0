//! What revocation costs: the check on every upgrade beside the same
//! verification without it, and revoking one subject among 100,000 guarded
//! sockets beside revoking a subject that has none (the fixed cost).

use std::future::{poll_fn, Future};
use std::hint::black_box;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
use tower_ws_auth::revocation::{Revocable, RevocationWatch, Revocations};
use tower_ws_auth::{Credential, SourceKind, Subject, Verification, Verifier};

const SECRET: &[u8] = b"benchmark-secret-of-thirty-two-b";
const SOCKETS: usize = 100_000;
const PER_SUBJECT: usize = 10;

fn token() -> String {
    let claims = BasicClaims {
        sub: "alice".into(),
        exp: tower_ws_auth::jwt::now_secs() + 3600,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn ready<V: Verifier>(verification: Verification<V::Future, V::Identity>) -> bool {
    matches!(verification, Verification::Ready(Ok(_)))
}

fn check_per_upgrade(c: &mut Criterion) {
    let jwt = JwtVerifier::<BasicClaims>::hs256(SECRET).unwrap();
    let revocations = Revocations::memory();
    // A realistic amount of revocation records: 10,000 sessions and 1,000
    // subjects, none of them alice.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for i in 0..10_000 {
            revocations.revoke_session(&format!("s{i}")).await.unwrap();
        }
        for i in 0..1_000 {
            revocations
                .revoke_subject(&format!("user{i}"))
                .await
                .unwrap();
        }
    });
    let checked = revocations.enforce(jwt.clone());
    let credential = Credential::new(SourceKind::Header, token());
    let mut group = c.benchmark_group("revocation/check per upgrade");
    group.bench_function("JwtVerifier (baseline)", |b| {
        b.iter(|| {
            assert!(ready::<JwtVerifier<BasicClaims>>(
                jwt.verify_now(black_box(credential.clone()))
            ))
        })
    });
    group.bench_function("JwtVerifier + revocation check", |b| {
        b.iter(|| {
            assert!(ready::<JwtVerifier<BasicClaims>>(
                match checked.verify_now(black_box(credential.clone())) {
                    Verification::Ready(outcome) => Verification::Ready(outcome),
                    Verification::Pending(_) => unreachable!("memory revocations decide at once"),
                }
            ))
        })
    });
    let claims = BasicClaims {
        sub: "alice".into(),
        exp: 0,
    };
    group.bench_function("the check alone", |b| {
        b.iter(|| revocations.check(black_box(&claims)).unwrap())
    });
    group.finish();
}

/// A guarded socket's identity: a subject and a session.
#[derive(Clone)]
struct Socket {
    subject: String,
    session: String,
}

impl Subject for Socket {
    fn subject(&self) -> &str {
        &self.subject
    }
}

impl Revocable for Socket {
    fn session_id(&self) -> Option<&str> {
        Some(&self.session)
    }
    fn issued_at(&self) -> Option<SystemTime> {
        Some(SystemTime::now() - Duration::from_secs(60))
    }
}

/// Poll `revocation` once: the record is written and the sockets are flagged
/// and woken on that first poll; what is left is `revoke_subject` waiting
/// for the clock to leave the cut-off's millisecond before it returns (so a
/// login after it works at once), which is not work and is not measured.
async fn takes_effect<F: Future>(revocation: F) {
    let mut revocation = pin!(revocation);
    poll_fn(|cx| {
        let _ = revocation.as_mut().poll(cx);
        Poll::Ready(())
    })
    .await;
}

/// 100,000 registered sockets, 10 per subject.
fn fleet(revocations: &Revocations) -> Vec<RevocationWatch> {
    (0..SOCKETS)
        .map(|i| {
            revocations.watch(&Socket {
                subject: format!("user{}", i / PER_SUBJECT),
                session: format!("session{i}"),
            })
        })
        .collect()
}

fn revoke_one_subject(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("revocation/revoke one subject among 100,000 sockets");
    group.sample_size(20);
    for (name, subject) in [
        ("subject with 10 sockets", "user4242"),
        ("subject with no socket (baseline)", "nobody"),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let revocations = Revocations::memory();
                    let watches = fleet(&revocations);
                    (revocations, watches)
                },
                |(revocations, watches)| {
                    runtime.block_on(takes_effect(revocations.revoke_subject(subject)));
                    (revocations, watches)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();

    // Only that subject's sockets are touched.
    let revocations = Revocations::memory();
    let watches = fleet(&revocations);
    let started = Instant::now();
    runtime.block_on(takes_effect(revocations.revoke_subject("user4242")));
    let took = started.elapsed();
    let fired: Vec<usize> = watches
        .iter()
        .enumerate()
        .filter(|(_, w)| w.is_revoked())
        .map(|(i, _)| i)
        .collect();
    let expected: Vec<usize> = (42420..42430).collect();
    assert_eq!(fired, expected, "only user4242's sockets were touched");
    println!(
        "revoked 1 subject among {SOCKETS} sockets in {took:?}: {} sockets fired, all of them the subject's",
        fired.len()
    );
}

criterion_group!(benches, check_per_upgrade, revoke_one_subject);
criterion_main!(benches);
