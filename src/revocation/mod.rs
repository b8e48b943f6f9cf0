//! Revocation that reaches open sockets: logout, a ban or a password change
//! closes the sockets a credential already opened, and refuses it from then
//! on.
//!
//! A [`Revocations`] handle records two kinds of revocation:
//!
//! | call | revokes |
//! |---|---|
//! | [`revoke_session`](Revocations::revoke_session) | one session: an opaque session id, a token's `sid` or `jti` ([`Revocable::session_id`]) |
//! | [`revoke_subject`](Revocations::revoke_subject) | a subject logged out everywhere: every credential of it issued up to now, to the millisecond ([`Revocable::issued_at`]; a credential that does not say when it was issued, or says a time more than 5 s ahead, counts as issued before); it returns once the clock has moved past that millisecond, so a login after it works at once |
//!
//! and enforces them at both ends:
//!
//! - **at the upgrade**: a verifier wrapped with [`Revocations::enforce`]
//!   refuses a revoked credential ([`Revoked`](crate::AuthErrorKind::Revoked):
//!   401 `invalid_token`, close 4003), an O(1) look-up in memory;
//! - **on live sockets**: a [`LifetimeGuard`](crate::first_message::LifetimeGuard)
//!   given a [`RevocationWatch`] closes its socket when its credential is
//!   revoked (JSON preset 4003, graphql-transport-ws 4403). Live sockets are
//!   indexed by subject and by session: a revocation touches only the sockets
//!   it concerns, never a scan of all of them.
//!
//! Records live as long as the longest credential they can concern
//! ([`record_ttl`](Revocations::record_ttl), default 1 hour), so they never
//! outlive their use, and their number is capped
//! ([`DEFAULT_MAX_RECORDS`]; beyond it a revocation fails with
//! [`LimitReached`](crate::AuthErrorKind::LimitReached) rather than forget an
//! older one).
//!
//! Backends: [`Revocations::memory`] for one server instance;
//! `Revocations::redis` (feature `redis`) for several, which share the
//! records and reach each other's live sockets through Redis
//! publish/subscribe (see its docs for latency and failure modes).
//!
//! ```
//! use std::future::{ready, Ready};
//! use tower_ws_auth::revocation::{Revocable, Revocations};
//! use tower_ws_auth::{AuthError, AuthErrorKind, Credential, SourceKind, Subject, Verified, Verifier};
//!
//! #[derive(Clone, Debug)]
//! struct Session { user: String, id: String }
//! impl Subject for Session { fn subject(&self) -> &str { &self.user } }
//! impl Revocable for Session { fn session_id(&self) -> Option<&str> { Some(&self.id) } }
//!
//! let lookup = |c: Credential| -> Ready<Result<Verified<Session>, AuthError>> {
//!     ready(Ok(Verified::new(Session { user: "alice".into(), id: c.expose_secret().into() })))
//! };
//! let revocations = Revocations::memory();
//! let verifier = revocations.enforce(lookup);
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let s1 = Credential::new(SourceKind::Cookie, "s1");
//! assert!(verifier.verify(s1.clone()).await.is_ok());
//!
//! revocations.revoke_session("s1").await.unwrap(); // logout
//! let refused = verifier.verify(s1).await.unwrap_err();
//! assert_eq!(refused.kind(), AuthErrorKind::Revoked);
//! assert_eq!(refused.status(), http::StatusCode::UNAUTHORIZED);
//! # });
//! ```

mod live;
mod records;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pin_project_lite::pin_project;
use sha2::{Digest, Sha256};

use self::live::LiveSockets;
pub use self::live::RevocationWatch;
use self::records::Records;
#[cfg(feature = "redis")]
pub use self::redis::DEFAULT_REVOCATION_PREFIX;
use crate::credential::Credential;
use crate::error::{AuthError, AuthErrorKind};
use crate::verify::{Authenticated, Subject, Verification, Verified, Verifier};

/// Default lifetime of a revocation record: as long as the longest
/// credential it can concern should be (set it with
/// [`Revocations::record_ttl`]).
pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(60 * 60);

/// Default cap on revocation records held at once.
pub const DEFAULT_MAX_RECORDS: usize = 1_000_000;

/// What a revocation needs to know of an identity: whose it is, which
/// session it belongs to, when its credential was issued.
///
/// Implemented for every [`JwtClaims`](crate::jwt::JwtClaims) (which says
/// where its `sid`/`jti` and `iat` are), for `String` and `Arc<str>` (a
/// subject alone) and for [`Authenticated<I>`].
pub trait Revocable: Subject {
    /// The session this credential belongs to, if any: an opaque session id,
    /// a token's `sid` or `jti`.
    fn session_id(&self) -> Option<&str> {
        None
    }

    /// When the credential was issued. `None`: unknown, so a subject's
    /// revocation covers it.
    fn issued_at(&self) -> Option<SystemTime> {
        None
    }
}

impl Revocable for String {}
impl Revocable for Arc<str> {}

impl<I: Revocable> Revocable for Authenticated<I> {
    fn session_id(&self) -> Option<&str> {
        self.identity.session_id()
    }

    fn issued_at(&self) -> Option<SystemTime> {
        self.identity.issued_at()
    }
}

/// A short, fixed-size key for a subject or a session: what records and the
/// live-socket index hold, so that neither a dump of the store nor a log of
/// it carries a session id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Tag([u8; 16]);

impl Tag {
    fn of(kind: &[u8], value: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(kind);
        hasher.update([0]);
        hasher.update(value.as_bytes());
        let digest: [u8; 32] = hasher.finalize().into();
        let mut tag = [0; 16];
        tag.copy_from_slice(&digest[..16]);
        Self(tag)
    }

    pub(crate) fn subject(subject: &str) -> Self {
        Self::of(b"subject", subject)
    }

    pub(crate) fn session(session: &str) -> Self {
        Self::of(b"session", session)
    }

    #[cfg(feature = "redis")]
    pub(crate) fn to_text(self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0)
    }

    #[cfg(feature = "redis")]
    pub(crate) fn from_text(text: &str) -> Option<Self> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How far in the future an issue time may lie (clock skew) before it is
/// taken as unknown.
const FUTURE_ISSUE_TOLERANCE_MS: u64 = 5_000;

/// The facts of one credential a revocation is checked against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Facts {
    pub(crate) subject: Tag,
    pub(crate) session: Option<Tag>,
    /// Milliseconds since the epoch; `None`: unknown.
    pub(crate) issued_at: Option<u64>,
}

impl Facts {
    pub(crate) fn of(identity: &impl Revocable) -> Self {
        Self {
            subject: Tag::subject(identity.subject()),
            session: identity.session_id().map(Tag::session),
            issued_at: identity.issued_at().map(millis),
        }
    }
}

/// Whether a credential issued at `issued` (ms; `None`: unknown) falls under
/// a subject's cut-off. A credential that claims to be issued more than
/// [`FUTURE_ISSUE_TOLERANCE_MS`] in the future (a clock ahead, or a forged
/// `iat`) must not escape a logout: its issue time counts as unknown. The
/// clock is read only here, when the subject has a revocation at all.
pub(crate) fn issued_by(issued: Option<u64>, cutoff: u64) -> bool {
    match issued {
        None => true,
        Some(issued) if issued <= cutoff => true,
        Some(issued) => {
            issued > millis(SystemTime::now()).saturating_add(FUTURE_ISSUE_TOLERANCE_MS)
        }
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tag([redacted])")
    }
}

pub(crate) enum Backend {
    Memory,
    #[cfg(feature = "redis")]
    Redis(self::redis::RedisBackend),
}

pub(crate) struct Shared {
    pub(crate) records: Records,
    pub(crate) live: LiveSockets,
    pub(crate) backend: Backend,
}

/// Revocations, and the live sockets they reach. Cheap to clone (clones
/// share everything). See the [module docs](self).
#[derive(Clone)]
pub struct Revocations {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match self.shared.backend {
            Backend::Memory => "memory",
            #[cfg(feature = "redis")]
            Backend::Redis(_) => "redis",
        };
        f.debug_struct("Revocations")
            .field("backend", &backend)
            .field("records", &self.shared.records.len())
            .field("live_sockets", &self.shared.live.len())
            .finish()
    }
}

impl Revocations {
    /// Revocations held in memory: for one server instance.
    pub fn memory() -> Self {
        Self::with(Backend::Memory, DEFAULT_RECORD_TTL, DEFAULT_MAX_RECORDS)
    }

    pub(crate) fn with(backend: Backend, ttl: Duration, max_records: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                records: Records::new(ttl, max_records),
                live: LiveSockets::default(),
                backend,
            }),
        }
    }

    /// How long a revocation is remembered: at least as long as the longest
    /// credential it can concern lives (default [`DEFAULT_RECORD_TTL`]).
    /// Set it before the handle is cloned or used.
    #[must_use]
    pub fn record_ttl(self, ttl: Duration) -> Self {
        self.shared.records.set_ttl(ttl);
        self
    }

    /// Revoke one session: every credential whose
    /// [`session_id`](Revocable::session_id) is `session_id` is refused from
    /// now on, and the live sockets it opened are closed.
    ///
    /// # Errors
    ///
    /// [`LimitReached`](AuthErrorKind::LimitReached) at the record cap;
    /// [`Unavailable`](AuthErrorKind::Unavailable) when the shared store cannot
    /// be reached (this instance's sockets are closed all the same).
    pub async fn revoke_session(&self, session_id: &str) -> Result<(), AuthError> {
        let tag = Tag::session(session_id);
        self.shared.records.revoke_session(tag, None)?;
        let closed = self.shared.live.revoke_session(tag);
        tracing::info!(closed, "session revoked");
        match &self.shared.backend {
            Backend::Memory => Ok(()),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.publish_session(tag, self.shared.records.ttl()).await,
        }
    }

    /// Log `subject` out everywhere: every credential of it issued up to now
    /// (to the millisecond; tokens by `iat`, sessions and tickets by when
    /// their credential was issued) is refused from now on, and the live
    /// sockets they opened are closed. Credentials issued afterwards work at
    /// once.
    ///
    /// # Errors
    ///
    /// As [`revoke_session`](Self::revoke_session).
    pub async fn revoke_subject(&self, subject: &str) -> Result<(), AuthError> {
        let tag = Tag::subject(subject);
        let cutoff = millis(SystemTime::now());
        self.shared.records.revoke_subject(tag, cutoff, None)?;
        let closed = self.shared.live.revoke_subject(tag, cutoff);
        tracing::info!(subject, closed, "subject logged out everywhere");
        // Return only once the clock has left the cut-off's millisecond, so
        // that a credential issued after this call is strictly newer than
        // the cut-off and works at once.
        while millis(SystemTime::now()) <= cutoff {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        match &self.shared.backend {
            Backend::Memory => Ok(()),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => {
                redis
                    .publish_subject(tag, cutoff, self.shared.records.ttl())
                    .await
            }
        }
    }

    /// Whether `identity`'s credential has been revoked: an O(1) look-up in
    /// memory.
    ///
    /// # Errors
    ///
    /// [`Revoked`](AuthErrorKind::Revoked) when it has;
    /// [`Unavailable`](AuthErrorKind::Unavailable) when this instance is not
    /// in step with the shared store (Redis unreachable): it fails closed.
    pub fn check(&self, identity: &impl Revocable) -> Result<(), AuthError> {
        #[cfg(feature = "redis")]
        if let Backend::Redis(redis) = &self.shared.backend {
            redis.in_step()?;
        }
        if self.shared.records.is_revoked(&Facts::of(identity)) {
            Err(AuthError::new(AuthErrorKind::Revoked))
        } else {
            Ok(())
        }
    }

    /// Wrap `verifier` so that it refuses revoked credentials, at the upgrade
    /// and for in-band re-authentication alike.
    pub fn enforce<V>(&self, verifier: V) -> CheckRevoked<V>
    where
        V: Verifier,
        V::Identity: Revocable,
    {
        CheckRevoked {
            verifier,
            revocations: self.clone(),
        }
    }

    /// Whether this instance is in step with the shared store (always true in
    /// memory): while it is not, [`check`](Self::check) fails closed.
    pub fn is_in_step(&self) -> bool {
        match &self.shared.backend {
            Backend::Memory => true,
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.in_step().is_ok(),
        }
    }

    /// Wait until this instance is in step with the shared store, at most
    /// `within` (at once in memory). Whether it is: call it before serving,
    /// so the first upgrades do not wait.
    pub async fn wait_in_step(&self, within: Duration) -> bool {
        match &self.shared.backend {
            Backend::Memory => {
                let _ = within;
                true
            }
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.wait_in_step(within).await,
        }
    }

    /// Register a live socket authenticated as `identity`, for a
    /// [`LifetimeGuard`](crate::first_message::LifetimeGuard): the watch fires
    /// when its credential is revoked. Unregistered when dropped.
    pub fn watch(&self, identity: &impl Revocable) -> RevocationWatch {
        RevocationWatch::register(self.clone(), Facts::of(identity))
    }
}

/// A verifier that refuses revoked credentials. Built by
/// [`Revocations::enforce`].
#[derive(Clone)]
pub struct CheckRevoked<V> {
    verifier: V,
    revocations: Revocations,
}

impl<V: fmt::Debug> fmt::Debug for CheckRevoked<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckRevoked")
            .field("verifier", &self.verifier)
            .field("revocations", &self.revocations)
            .finish()
    }
}

/// How long a check waits for an instance that is not in step with the
/// shared store (starting up, or reconnecting after a blip) before it fails
/// closed.
pub const IN_STEP_WAIT: Duration = Duration::from_secs(1);

fn checked<I: Revocable>(
    revocations: &Revocations,
    outcome: Result<Verified<I>, AuthError>,
) -> Result<Verified<I>, AuthError> {
    let verified = outcome?;
    revocations.check(&verified.identity)?;
    Ok(verified)
}

type Waiting<I> = Pin<Box<dyn Future<Output = Result<Verified<I>, AuthError>> + Send>>;

/// Check `outcome` now when the instance is in step; otherwise wait for it
/// (at most [`IN_STEP_WAIT`]) first.
fn check_or_wait<I: Revocable + Send + 'static>(
    revocations: &Revocations,
    outcome: Result<Verified<I>, AuthError>,
) -> Result<Result<Verified<I>, AuthError>, Waiting<I>> {
    let verified = match outcome {
        Ok(verified) if !revocations.is_in_step() => verified,
        outcome => return Ok(checked(revocations, outcome)),
    };
    let revocations = revocations.clone();
    Err(Box::pin(async move {
        revocations.wait_in_step(IN_STEP_WAIT).await;
        checked(&revocations, Ok(verified))
    }))
}

impl<V> Verifier for CheckRevoked<V>
where
    V: Verifier,
    V::Identity: Revocable,
{
    type Identity = V::Identity;
    type Future = CheckRevokedFuture<V::Future, V::Identity>;

    fn verify(&self, credential: Credential) -> Self::Future {
        CheckRevokedFuture {
            state: CheckState::Verifying {
                inner: self.verifier.verify(credential),
                revocations: Some(self.revocations.clone()),
            },
        }
    }

    fn verify_now(&self, credential: Credential) -> Verification<Self::Future, Self::Identity> {
        match self.verifier.verify_now(credential) {
            Verification::Ready(outcome) => match check_or_wait(&self.revocations, outcome) {
                Ok(outcome) => Verification::Ready(outcome),
                Err(waiting) => Verification::Pending(CheckRevokedFuture {
                    state: CheckState::Waiting { waiting },
                }),
            },
            Verification::Pending(inner) => Verification::Pending(CheckRevokedFuture {
                state: CheckState::Verifying {
                    inner,
                    revocations: Some(self.revocations.clone()),
                },
            }),
        }
    }

    fn subject_of<'a>(&self, identity: &'a Self::Identity) -> Option<&'a str> {
        Some(identity.subject())
    }
}

pin_project! {
    /// The future of a [`CheckRevoked`] verifier.
    pub struct CheckRevokedFuture<F, I> {
        #[pin]
        state: CheckState<F, I>,
    }
}

pin_project! {
    #[project = CheckStateProj]
    enum CheckState<F, I> {
        Verifying {
            #[pin]
            inner: F,
            revocations: Option<Revocations>,
        },
        Waiting {
            waiting: Waiting<I>,
        },
    }
}

impl<F, I> fmt::Debug for CheckRevokedFuture<F, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckRevokedFuture").finish_non_exhaustive()
    }
}

impl<F, I> Future for CheckRevokedFuture<F, I>
where
    F: Future<Output = Result<Verified<I>, AuthError>>,
    I: Revocable + Send + 'static,
{
    type Output = Result<Verified<I>, AuthError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                CheckStateProj::Verifying { inner, revocations } => {
                    let outcome = std::task::ready!(inner.poll(cx));
                    let Some(revocations) = revocations.take() else {
                        return Poll::Ready(Err(AuthError::new(AuthErrorKind::Invalid)
                            .with_detail("verification polled after completion")));
                    };
                    match check_or_wait(&revocations, outcome) {
                        Ok(outcome) => return Poll::Ready(outcome),
                        Err(waiting) => state.set(CheckState::Waiting { waiting }),
                    }
                }
                CheckStateProj::Waiting { waiting } => return waiting.as_mut().poll(cx),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Issued(SystemTime);

    impl Subject for Issued {
        fn subject(&self) -> &str {
            "alice"
        }
    }

    impl Revocable for Issued {
        fn issued_at(&self) -> Option<SystemTime> {
            Some(self.0)
        }
    }

    #[tokio::test]
    async fn a_logout_covers_what_came_before_and_claims_from_the_future() {
        let revocations = Revocations::memory();
        let before = Issued(SystemTime::now() - Duration::from_secs(1));
        revocations.revoke_subject("alice").await.unwrap();
        let after = Issued(SystemTime::now());
        let skewed = Issued(SystemTime::now() + Duration::from_secs(2));
        let forged = Issued(SystemTime::now() + Duration::from_secs(3600));
        let kind = |i: &Issued| revocations.check(i).map_err(|e| e.kind());
        assert_eq!(kind(&before), Err(AuthErrorKind::Revoked));
        assert_eq!(kind(&after), Ok(()), "issued after the logout returned");
        assert_eq!(kind(&skewed), Ok(()), "a clock a little ahead");
        assert_eq!(
            kind(&forged),
            Err(AuthErrorKind::Revoked),
            "an iat far ahead"
        );
    }
}
