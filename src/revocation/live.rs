//! The live sockets revocations reach, indexed by subject and by session so
//! that a revocation touches only the sockets it concerns.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Waker};

use super::{Facts, Revocable, Revocations, Tag};

const SHARDS: usize = 16;
/// `issued_at` unknown: any revocation of the subject covers it.
const UNKNOWN: u64 = u64::MAX;

/// One live socket, as the index and its guard share it.
pub(crate) struct Watched {
    revoked: AtomicBool,
    issued_at: AtomicU64,
    waker: Mutex<Option<Waker>>,
}

impl Watched {
    fn fire(&self) {
        self.revoked.store(true, Ordering::Release);
        let waker = lock(&self.waker).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn issued_by(&self, cutoff: u64) -> bool {
        let issued = self.issued_at.load(Ordering::Relaxed);
        super::issued_by((issued != UNKNOWN).then_some(issued), cutoff)
    }
}

type Index = HashMap<Tag, Vec<Arc<Watched>>>;

#[derive(Default)]
pub(crate) struct LiveSockets {
    by_subject: [Mutex<Index>; SHARDS],
    by_session: [Mutex<Index>; SHARDS],
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single push or removal: still consistent after a
    // panic elsewhere.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn shard(tag: Tag) -> usize {
    usize::from(tag.0[0]) % SHARDS
}

fn remove(index: &Mutex<Index>, tag: Tag, watched: &Arc<Watched>) {
    let mut index = lock(index);
    if let Some(sockets) = index.get_mut(&tag) {
        sockets.retain(|s| !Arc::ptr_eq(s, watched));
        if sockets.is_empty() {
            index.remove(&tag);
        }
    }
}

impl LiveSockets {
    pub(crate) fn len(&self) -> usize {
        self.by_subject
            .iter()
            .map(|s| lock(s).values().map(Vec::len).sum::<usize>())
            .sum()
    }

    fn add(&self, facts: &Facts, watched: &Arc<Watched>) {
        lock(&self.by_subject[shard(facts.subject)])
            .entry(facts.subject)
            .or_default()
            .push(watched.clone());
        if let Some(session) = facts.session {
            lock(&self.by_session[shard(session)])
                .entry(session)
                .or_default()
                .push(watched.clone());
        }
    }

    fn remove(&self, facts: &Facts, watched: &Arc<Watched>) {
        remove(
            &self.by_subject[shard(facts.subject)],
            facts.subject,
            watched,
        );
        if let Some(session) = facts.session {
            remove(&self.by_session[shard(session)], session, watched);
        }
    }

    /// Close the sockets of this session. How many were open.
    pub(crate) fn revoke_session(&self, session: Tag) -> usize {
        let index = lock(&self.by_session[shard(session)]);
        let sockets = index.get(&session).map_or(&[][..], Vec::as_slice);
        sockets.iter().for_each(|s| s.fire());
        sockets.len()
    }

    /// Close the sockets of this subject whose credential was issued up to
    /// `cutoff`. How many.
    pub(crate) fn revoke_subject(&self, subject: Tag, cutoff: u64) -> usize {
        let index = lock(&self.by_subject[shard(subject)]);
        let sockets = index.get(&subject).map_or(&[][..], Vec::as_slice);
        let mut closed = 0;
        for socket in sockets.iter().filter(|s| s.issued_by(cutoff)) {
            socket.fire();
            closed += 1;
        }
        closed
    }
}

/// A live socket's registration with [`Revocations`]: fires when its
/// credential is revoked. Hand it to
/// [`LifetimeGuard::revocation`](crate::first_message::LifetimeGuard::revocation);
/// dropping it unregisters the socket.
pub struct RevocationWatch {
    revocations: Revocations,
    facts: Facts,
    watched: Arc<Watched>,
}

impl fmt::Debug for RevocationWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationWatch")
            .field("revoked", &self.is_revoked())
            .finish_non_exhaustive()
    }
}

impl RevocationWatch {
    pub(crate) fn register(revocations: Revocations, facts: Facts) -> Self {
        let watched = Arc::new(Watched {
            revoked: AtomicBool::new(false),
            issued_at: AtomicU64::new(facts.issued_at.unwrap_or(UNKNOWN)),
            waker: Mutex::new(None),
        });
        revocations.shared.live.add(&facts, &watched);
        // Revoked between the upgrade's check and now: fire at once.
        if revocations.shared.records.is_revoked(&facts) {
            watched.revoked.store(true, Ordering::Release);
        }
        Self {
            revocations,
            facts,
            watched,
        }
    }

    /// Whether the credential has been revoked. One atomic load.
    pub fn is_revoked(&self) -> bool {
        self.watched.revoked.load(Ordering::Acquire)
    }

    /// Whether the credential has been revoked; if not, wake `cx`'s task
    /// when it is.
    pub fn poll_revoked(&self, cx: &mut Context<'_>) -> bool {
        if self.is_revoked() {
            return true;
        }
        *lock(&self.watched.waker) = Some(cx.waker().clone());
        // Fired while the waker was being stored.
        self.is_revoked()
    }

    /// The socket re-authenticated as `identity`: watch its new credential
    /// instead.
    pub fn renew(&mut self, identity: &impl Revocable) {
        let facts = super::Facts::of(identity);
        if facts.subject == self.facts.subject && facts.session == self.facts.session {
            self.watched
                .issued_at
                .store(facts.issued_at.unwrap_or(UNKNOWN), Ordering::Relaxed);
            return;
        }
        *self = Self::register(self.revocations.clone(), facts);
    }
}

impl Drop for RevocationWatch {
    fn drop(&mut self) {
        self.revocations
            .shared
            .live
            .remove(&self.facts, &self.watched);
    }
}
