//! The revocation records one instance holds: revoked sessions and subjects'
//! cut-off times, each forgotten after the record TTL, capped in number.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use super::{Facts, Tag};
use crate::error::{AuthError, AuthErrorKind};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Session,
    Subject,
}

#[derive(Default)]
struct Maps {
    sessions: HashMap<Tag, Instant>,
    /// Cut-off (ms since the epoch) and when the record is forgotten.
    subjects: HashMap<Tag, (u64, Instant)>,
    expiry: BinaryHeap<Reverse<(Instant, Kind, Tag)>>,
}

pub(crate) struct Records {
    maps: RwLock<Maps>,
    ttl_ms: AtomicU64,
    max: usize,
}

impl Records {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            maps: RwLock::default(),
            ttl_ms: AtomicU64::new(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            max,
        }
    }

    pub(crate) fn set_ttl(&self, ttl: Duration) {
        self.ttl_ms.store(
            u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(Ordering::Relaxed))
    }

    fn read(&self) -> RwLockReadGuard<'_, Maps> {
        // Every update is a single insert or remove: a panic elsewhere
        // leaves the maps consistent.
        self.maps.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn len(&self) -> usize {
        let maps = self.read();
        maps.sessions.len() + maps.subjects.len()
    }

    /// When a new record is forgotten: after the TTL, or after `remaining`
    /// when the shared store said so.
    fn forget_at(&self, remaining: Option<Duration>) -> Instant {
        let now = Instant::now();
        let ttl = remaining.unwrap_or_else(|| self.ttl());
        now.checked_add(ttl)
            .unwrap_or(now + Duration::from_secs(100 * 365 * 24 * 3600))
    }

    /// Drop forgotten records; refuse a new one at the cap.
    fn make_room(&self, maps: &mut Maps) -> Result<(), AuthError> {
        let now = Instant::now();
        while let Some(Reverse((at, kind, tag))) = maps.expiry.peek().copied() {
            if at > now {
                break;
            }
            maps.expiry.pop();
            // One heap entry per record: a record renewed since goes back in
            // at its later instant.
            let renewed = match kind {
                Kind::Session => maps.sessions.get(&tag).copied(),
                Kind::Subject => maps.subjects.get(&tag).map(|r| r.1),
            };
            match renewed {
                Some(later) if later > at => maps.expiry.push(Reverse((later, kind, tag))),
                Some(_) => {
                    match kind {
                        Kind::Session => maps.sessions.remove(&tag),
                        Kind::Subject => maps.subjects.remove(&tag).map(|r| r.1),
                    };
                }
                None => {}
            }
        }
        if maps.sessions.len() + maps.subjects.len() >= self.max {
            return Err(AuthError::new(AuthErrorKind::LimitReached)
                .with_detail("too many revocation records"));
        }
        Ok(())
    }

    pub(crate) fn revoke_session(
        &self,
        tag: Tag,
        remaining: Option<Duration>,
    ) -> Result<(), AuthError> {
        let forget = self.forget_at(remaining);
        let mut maps = self.write();
        match maps.sessions.get_mut(&tag) {
            Some(at) => *at = (*at).max(forget),
            None => {
                self.make_room(&mut maps)?;
                maps.sessions.insert(tag, forget);
                maps.expiry.push(Reverse((forget, Kind::Session, tag)));
            }
        }
        Ok(())
    }

    pub(crate) fn revoke_subject(
        &self,
        tag: Tag,
        cutoff_ms: u64,
        remaining: Option<Duration>,
    ) -> Result<(), AuthError> {
        let forget = self.forget_at(remaining);
        let mut maps = self.write();
        match maps.subjects.get_mut(&tag) {
            Some(record) => {
                record.0 = record.0.max(cutoff_ms);
                record.1 = record.1.max(forget);
            }
            None => {
                self.make_room(&mut maps)?;
                maps.subjects.insert(tag, (cutoff_ms, forget));
                maps.expiry.push(Reverse((forget, Kind::Subject, tag)));
            }
        }
        Ok(())
    }

    /// Whether a credential with these facts is revoked.
    pub(crate) fn is_revoked(&self, facts: &Facts) -> bool {
        let now = Instant::now();
        let maps = self.read();
        if let Some(session) = facts.session {
            if maps
                .sessions
                .get(&session)
                .is_some_and(|&until| until > now)
            {
                return true;
            }
        }
        match maps.subjects.get(&facts.subject) {
            Some(&(cutoff, until)) if until > now => super::issued_by(facts.issued_at, cutoff),
            _ => false,
        }
    }
}
