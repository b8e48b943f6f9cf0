use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::future::{ready, Ready};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::{bounded_ttl, ticket_key, unknown_ticket, IssuedTicket, Ticket, TicketStore};
use crate::credential::Credential;
use crate::error::{AuthError, AuthErrorKind};
use crate::metrics;
use crate::verify::{Subject, Verification, Verified};

const SHARDS: usize = 16;

/// Default cap on outstanding tickets in one store.
pub const DEFAULT_MAX_TICKETS: usize = 100_000;
/// Default cap on outstanding tickets per subject.
pub const DEFAULT_MAX_TICKETS_PER_SUBJECT: usize = 16;

/// The in-memory ticket store: the embedded default for a single server
/// instance. Cheap to clone (clones share the store).
///
/// Sharded over 16 mutexes so both cores issue and redeem without waiting on
/// each other. Expired tickets are reclaimed from a per-shard expiry heap as
/// new tickets are issued, never by scanning the whole store.
///
/// Outstanding tickets are capped per [`Subject`] (default
/// [`DEFAULT_MAX_TICKETS_PER_SUBJECT`]; over it, issuing fails with
/// [`LimitReached`](AuthErrorKind::LimitReached), 429 at the endpoint) and in
/// total (default [`DEFAULT_MAX_TICKETS`]; when full, the ticket closest to
/// expiry is dropped to make room, so tickets of other identities can never
/// lock a new user out for a whole TTL). Memory stays bounded either way.
///
/// For several server instances behind a load balancer use
/// `RedisTicketStore` (feature `redis`).
pub struct MemoryTicketStore<I> {
    inner: Arc<Inner<I>>,
}

struct Inner<I> {
    shards: Box<[Mutex<Shard<I>>]>,
    hasher: RandomState,
    total: AtomicUsize,
    max_total: usize,
    max_per_subject: usize,
}

/// Keys are SHA-256 digests of 256-bit random tickets: their first eight
/// bytes are already a uniformly distributed hash that no client can steer,
/// so hashing them again would only cost time.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        if let Some(head) = bytes.first_chunk::<8>() {
            self.0 = u64::from_le_bytes(*head);
        }
    }

    fn write_usize(&mut self, _len: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

type DigestMap<V> = HashMap<[u8; 32], V, BuildHasherDefault<DigestHasher>>;

struct Shard<I> {
    tickets: DigestMap<Entry<I>>,
    expiry: BinaryHeap<Reverse<(Instant, [u8; 32])>>,
    /// Outstanding tickets per subject, keyed by the subject's keyed hash (a
    /// collision would only make two subjects share one cap).
    per_subject: HashMap<u64, usize>,
}

struct Entry<I> {
    identity: I,
    subject: u64,
    credential_expires_at: Option<SystemTime>,
    expires: Instant,
}

impl<I> Default for Shard<I> {
    fn default() -> Self {
        Self {
            tickets: DigestMap::default(),
            expiry: BinaryHeap::new(),
            per_subject: HashMap::new(),
        }
    }
}

impl<I> Clone for MemoryTicketStore<I> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<I> fmt::Debug for MemoryTicketStore<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTicketStore")
            .field("outstanding", &self.inner.total.load(Ordering::Relaxed))
            .field("max_total", &self.inner.max_total)
            .field("max_per_subject", &self.inner.max_per_subject)
            .finish()
    }
}

impl<I> Default for MemoryTicketStore<I> {
    fn default() -> Self {
        Self::with_limits(DEFAULT_MAX_TICKETS, DEFAULT_MAX_TICKETS_PER_SUBJECT)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard leaves maps that are still consistent
    // enough to use: every update is a single insert or remove.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<I> MemoryTicketStore<I> {
    /// A store with the default caps ([`DEFAULT_MAX_TICKETS`],
    /// [`DEFAULT_MAX_TICKETS_PER_SUBJECT`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A store with these caps on outstanding tickets.
    pub fn with_limits(max_total: usize, max_per_subject: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                hasher: RandomState::new(),
                total: AtomicUsize::new(0),
                max_total,
                max_per_subject,
            }),
        }
    }

    /// How many tickets are outstanding (issued, not redeemed, not yet
    /// reclaimed).
    pub fn len(&self) -> usize {
        self.inner.total.load(Ordering::Relaxed)
    }

    /// Whether no ticket is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop every expired ticket now (issuing does this incrementally).
    pub fn reclaim_expired(&self) {
        for index in 0..SHARDS {
            self.reclaim_shard(index, Instant::now());
        }
    }

    fn ticket_shard(key: &[u8; 32]) -> usize {
        usize::from(key[0]) % SHARDS
    }

    fn subject_key(&self, subject: &str) -> u64 {
        self.inner.hasher.hash_one(subject)
    }

    fn subject_shard(subject: u64) -> usize {
        (subject >> 56) as usize % SHARDS
    }

    fn release_subject(&self, subject: u64) {
        let mut shard = lock(&self.inner.shards[Self::subject_shard(subject)]);
        if let Some(count) = shard.per_subject.get_mut(&subject) {
            *count -= 1;
            if *count == 0 {
                shard.per_subject.remove(&subject);
            }
        }
    }

    /// Drop the shard's expired tickets; the subjects whose counts the
    /// caller must release once the shard's lock is let go.
    fn reclaim_locked(shard: &mut Shard<I>, now: Instant) -> Vec<u64> {
        let mut released = Vec::new();
        while let Some(Reverse((at, key))) = shard.expiry.peek().copied() {
            if at > now {
                break;
            }
            shard.expiry.pop();
            // The heap is lazy: a redeemed ticket's entry is gone already.
            if shard.tickets.get(&key).is_some_and(|e| e.expires == at) {
                if let Some(entry) = shard.tickets.remove(&key) {
                    released.push(entry.subject);
                }
            }
        }
        // Redeemed tickets leave stale heap entries behind; rebuild before
        // they outnumber the live ones.
        if shard.expiry.len() > 2 * shard.tickets.len() + 1024 {
            let rebuilt: BinaryHeap<_> = shard
                .tickets
                .iter()
                .map(|(key, e)| Reverse((e.expires, *key)))
                .collect();
            shard.expiry = rebuilt;
        }
        released
    }

    fn release_all(&self, released: Vec<u64>) {
        if released.is_empty() {
            return;
        }
        self.inner
            .total
            .fetch_sub(released.len(), Ordering::Relaxed);
        for subject in released {
            self.release_subject(subject);
        }
    }

    fn reclaim_shard(&self, index: usize, now: Instant) {
        let released = Self::reclaim_locked(&mut lock(&self.inner.shards[index]), now);
        metrics::tickets("expired", released.len() as u64);
        self.release_all(released);
    }

    fn try_reserve_total(&self) -> bool {
        if self.inner.total.fetch_add(1, Ordering::AcqRel) < self.inner.max_total {
            return true;
        }
        self.inner.total.fetch_sub(1, Ordering::AcqRel);
        false
    }

    /// Make room for one more ticket: expired ones go first; when the store
    /// is still full, the ticket closest to expiry is dropped, so that tickets
    /// of other identities cannot lock a new user out for a whole TTL.
    fn reserve_total(&self) -> Result<(), AuthError> {
        if self.try_reserve_total() {
            return Ok(());
        }
        self.reclaim_expired();
        // Bounded: concurrent issuers may take the freed places first.
        for _ in 0..4 {
            if self.try_reserve_total() {
                return Ok(());
            }
            if !self.evict_soonest() {
                break;
            }
        }
        if self.try_reserve_total() {
            return Ok(());
        }
        Err(AuthError::new(AuthErrorKind::LimitReached).with_detail("too many outstanding tickets"))
    }

    /// Drop the outstanding ticket that expires first. Whether one was found.
    fn evict_soonest(&self) -> bool {
        let live_head = |shard: &mut Shard<I>| -> Option<Instant> {
            // The heap is lazy: skip entries of redeemed tickets.
            while let Some(Reverse((at, key))) = shard.expiry.peek().copied() {
                if shard.tickets.get(&key).is_some_and(|e| e.expires == at) {
                    return Some(at);
                }
                shard.expiry.pop();
            }
            None
        };
        let mut soonest: Option<(Instant, usize)> = None;
        for (index, shard) in self.inner.shards.iter().enumerate() {
            if let Some(at) = live_head(&mut lock(shard)) {
                if soonest.is_none_or(|(best, _)| at < best) {
                    soonest = Some((at, index));
                }
            }
        }
        let Some((_, index)) = soonest else {
            return false;
        };
        let evicted = {
            let mut shard = lock(&self.inner.shards[index]);
            match live_head(&mut shard) {
                Some(_) => shard
                    .expiry
                    .pop()
                    .and_then(|Reverse((_, key))| shard.tickets.remove(&key)),
                None => None,
            }
        };
        match evicted {
            Some(entry) => {
                tracing::debug!("ticket store full: the ticket closest to expiry was dropped");
                metrics::tickets("evicted", 1);
                self.release_all(vec![entry.subject]);
                true
            }
            // Another thread took it: try again.
            None => true,
        }
    }

    fn reserve_subject(&self, subject: u64) -> Result<(), AuthError> {
        let mut shard = lock(&self.inner.shards[Self::subject_shard(subject)]);
        let count = shard.per_subject.entry(subject).or_insert(0);
        if *count >= self.inner.max_per_subject {
            return Err(AuthError::new(AuthErrorKind::LimitReached)
                .with_detail("too many outstanding tickets for this identity"));
        }
        *count += 1;
        Ok(())
    }
}

impl<I> MemoryTicketStore<I>
where
    I: Subject + Clone + Send + Sync + 'static,
{
    fn issue_now(&self, verified: Verified<I>, ttl: Duration) -> Result<IssuedTicket, AuthError> {
        let ttl = bounded_ttl(&verified, ttl)?;
        let ticket = Ticket::generate()?;
        let key = ticket_key(ticket.expose_secret()).ok_or_else(unknown_ticket)?;
        let index = Self::ticket_shard(&key);
        let now = Instant::now();

        let subject = self.subject_key(verified.identity.subject());
        if let Err(error) = self.reserve_subject(subject) {
            tracing::info!(
                subject = verified.identity.subject(),
                "ticket cap reached for this identity"
            );
            metrics::tickets("capped", 1);
            return Err(error);
        }
        tracing::debug!(subject = verified.identity.subject(), "ticket issued");
        if let Err(error) = self.reserve_total() {
            self.release_subject(subject);
            metrics::tickets("capped", 1);
            return Err(error);
        }
        let expires = now + ttl;
        let released = {
            let mut shard = lock(&self.inner.shards[index]);
            shard.expiry.push(Reverse((expires, key)));
            shard.tickets.insert(
                key,
                Entry {
                    identity: verified.identity,
                    subject,
                    credential_expires_at: verified.expires_at,
                    expires,
                },
            );
            // Reclaim while the shard is at hand: no scan, just the heap's top.
            Self::reclaim_locked(&mut shard, now)
        };
        metrics::tickets("expired", released.len() as u64);
        self.release_all(released);
        metrics::tickets("issued", 1);
        Ok(IssuedTicket {
            ticket,
            expires_in: ttl,
        })
    }

    fn redeem_at_once(&self, ticket: &Credential) -> Result<Verified<I>, AuthError> {
        let refused = || {
            metrics::tickets("refused", 1);
            unknown_ticket()
        };
        let key = ticket_key(ticket.expose_secret()).ok_or_else(refused)?;
        let entry = lock(&self.inner.shards[Self::ticket_shard(&key)])
            .tickets
            .remove(&key)
            .ok_or_else(refused)?;
        self.inner.total.fetch_sub(1, Ordering::Relaxed);
        self.release_subject(entry.subject);
        if entry.expires <= Instant::now() {
            metrics::tickets("expired", 1);
            return Err(unknown_ticket());
        }
        tracing::debug!(subject = entry.identity.subject(), "ticket redeemed");
        metrics::tickets("redeemed", 1);
        Ok(Verified {
            identity: entry.identity,
            expires_at: entry.credential_expires_at,
        })
    }
}

impl<I> TicketStore for MemoryTicketStore<I>
where
    I: Subject + Clone + Send + Sync + 'static,
{
    type Identity = I;
    type IssueFuture = Ready<Result<IssuedTicket, AuthError>>;
    type RedeemFuture = Ready<Result<Verified<I>, AuthError>>;

    fn issue(&self, verified: Verified<I>, ttl: Duration) -> Self::IssueFuture {
        ready(self.issue_now(verified, ttl))
    }

    fn redeem(&self, ticket: Credential) -> Self::RedeemFuture {
        ready(self.redeem_at_once(&ticket))
    }

    fn redeem_now(&self, ticket: Credential) -> Verification<Self::RedeemFuture, I> {
        Verification::Ready(self.redeem_at_once(&ticket))
    }

    fn subject_of<'a>(&self, identity: &'a I) -> Option<&'a str> {
        Some(identity.subject())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::SourceKind;

    fn cred(t: &IssuedTicket) -> Credential {
        Credential::new(SourceKind::Query, t.ticket.expose_secret())
    }

    #[test]
    fn exactly_once_and_caps() {
        let store = MemoryTicketStore::<String>::with_limits(3, 2);
        let a1 = store
            .issue_now(Verified::new("a".into()), Duration::from_secs(10))
            .unwrap();
        store
            .issue_now(Verified::new("a".into()), Duration::from_secs(30))
            .unwrap();
        let err = store
            .issue_now(Verified::new("a".into()), Duration::from_secs(30))
            .unwrap_err();
        assert_eq!(err.kind(), AuthErrorKind::LimitReached);
        store
            .issue_now(Verified::new("b".into()), Duration::from_secs(30))
            .unwrap();
        assert_eq!(store.len(), 3);
        // Full: a new user still gets a ticket; the one closest to expiry
        // (a1) makes room.
        let c = store
            .issue_now(Verified::new("c".into()), Duration::from_secs(30))
            .unwrap();
        assert_eq!(store.len(), 3);
        assert_eq!(
            store.redeem_at_once(&cred(&a1)).unwrap_err().kind(),
            AuthErrorKind::Invalid
        );
        assert_eq!(store.redeem_at_once(&cred(&c)).unwrap().identity, "c");
        assert_eq!(store.len(), 2);
        // a1's place under a's own cap was given back too.
        store
            .issue_now(Verified::new("a".into()), Duration::from_secs(30))
            .unwrap();
    }

    #[test]
    fn ttl_is_bounded_by_the_credential_and_expired_tickets_are_reclaimed() {
        let store = MemoryTicketStore::<String>::new();
        let soon = SystemTime::now() + Duration::from_millis(50);
        let t = store
            .issue_now(
                Verified::new("a".into()).expires_at(soon),
                Duration::from_secs(30),
            )
            .unwrap();
        assert!(t.expires_in <= Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        store.reclaim_expired();
        assert!(store.is_empty());
        assert_eq!(
            store.redeem_at_once(&cred(&t)).unwrap_err().kind(),
            AuthErrorKind::Invalid
        );
        let past = SystemTime::now() - Duration::from_secs(1);
        let err = store
            .issue_now(
                Verified::new("a".into()).expires_at(past),
                Duration::from_secs(30),
            )
            .unwrap_err();
        assert_eq!(err.kind(), AuthErrorKind::Expired);
    }
}
