//! One-time connection tickets: the pattern for browser SPAs.
//!
//! 1. The page calls an HTTP endpoint protected by the app's existing auth
//!    (for example `POST /ws-ticket` with `Authorization: Bearer <jwt>`); the
//!    [`TicketEndpoint`] issues a ticket that lives 30 s by default.
//! 2. The page opens `wss://host/ws?ticket=<ticket>`.
//! 3. The upgrade layer, with [`Query::param("ticket")`](crate::source::Query::param)
//!    and the store's [`TicketVerifier`], redeems it — exactly once.
//!
//! Long-lived tokens never reach a URL; a ticket that does reach a log is
//! useless after its single use or its 30 s.
//!
//! Tickets are 256 bits from the OS random number generator, base64url
//! (43 characters). Stores key them by their SHA-256, so a dump of the store
//! holds no live ticket. A ticket never outlives the credential it was issued
//! for, and redeeming it yields that credential's expiry, so the
//! [`LifetimeGuard`](crate::first_message::LifetimeGuard) closes the socket when
//! the original credential would have expired.
//!
//! ```
//! use std::time::Duration;
//! use tower_ws_auth::ticket::{MemoryTicketStore, TicketStore};
//! use tower_ws_auth::{AuthErrorKind, Credential, SourceKind, Verified};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let store = MemoryTicketStore::<String>::new();
//! let issued = store.issue(Verified::new("alice".to_owned()), Duration::from_secs(30)).await.unwrap();
//! let presented = Credential::new(SourceKind::Query, issued.ticket.expose_secret());
//!
//! let first = store.redeem(presented.clone()).await.unwrap();
//! assert_eq!(first.identity, "alice");
//!
//! let replay = store.redeem(presented).await.unwrap_err();
//! assert_eq!(replay.kind(), AuthErrorKind::Invalid);
//! # });
//! ```

mod endpoint;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

pub use self::endpoint::{FromExtensions, IdentifyCaller, TicketEndpoint};
pub use self::memory::{MemoryTicketStore, DEFAULT_MAX_TICKETS, DEFAULT_MAX_TICKETS_PER_SUBJECT};
#[cfg(feature = "redis")]
pub use self::redis::{RedisTicketStore, DEFAULT_PREFIX};
use crate::credential::Credential;
use crate::error::{AuthError, AuthErrorKind};
use crate::verify::{Verification, Verified, Verifier};

/// Default ticket lifetime: 30 s.
pub const DEFAULT_TICKET_TTL: Duration = Duration::from_secs(30);

/// Length of an encoded ticket: 32 bytes in unpadded base64url.
pub const TICKET_LEN: usize = 43;

/// A one-time ticket. `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct Ticket(String);

impl Ticket {
    /// A fresh ticket: 256 bits from the OS random number generator.
    ///
    /// # Errors
    ///
    /// [`Unavailable`](AuthErrorKind::Unavailable) when the OS cannot supply
    /// randomness.
    pub fn generate() -> Result<Self, AuthError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| {
            AuthError::new(AuthErrorKind::Unavailable)
                .with_detail("no randomness available")
                .with_source(std::io::Error::other(e.to_string()))
        })?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The ticket's text, to send to the client. Never log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ticket([redacted])")
    }
}

/// A ticket and how long it lives.
#[derive(Clone, Debug)]
pub struct IssuedTicket {
    /// The ticket.
    pub ticket: Ticket,
    /// Its lifetime: the requested TTL, shortened to the credential's remaining
    /// lifetime.
    pub expires_in: Duration,
}

/// The key a store files a ticket under: SHA-256 of the ticket, so the store
/// never holds a redeemable value. `None` for anything that is not a
/// well-formed ticket (which is then never looked up).
pub(crate) fn ticket_key(ticket: &str) -> Option<[u8; 32]> {
    let well_formed = ticket.len() == TICKET_LEN
        && ticket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| Sha256::digest(ticket.as_bytes()).into())
}

/// The lifetime of a ticket issued for `verified`: `ttl`, but never beyond the
/// credential's own expiry.
pub(crate) fn bounded_ttl<I>(verified: &Verified<I>, ttl: Duration) -> Result<Duration, AuthError> {
    let ttl = match verified.expires_at {
        Some(at) => at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(ttl),
        None => ttl,
    };
    if ttl < Duration::from_millis(1) {
        return Err(AuthError::new(AuthErrorKind::Expired)
            .with_detail("the credential asking for a ticket has expired"));
    }
    Ok(ttl)
}

pub(crate) fn unknown_ticket() -> AuthError {
    AuthError::new(AuthErrorKind::Invalid).with_detail("unknown, expired or already used ticket")
}

/// Issues and redeems one-time tickets. Redemption is atomic: of any number of
/// concurrent redemptions of one ticket, exactly one succeeds.
pub trait TicketStore {
    /// The identity a ticket stands for.
    type Identity: Clone + Send + Sync + 'static;
    /// Future of [`issue`](Self::issue).
    type IssueFuture: Future<Output = Result<IssuedTicket, AuthError>>;
    /// Future of [`redeem`](Self::redeem).
    type RedeemFuture: Future<Output = Result<Verified<Self::Identity>, AuthError>>;

    /// Issue a ticket for `verified`, living `ttl` at most (and never past
    /// `verified.expires_at`).
    ///
    /// The future fails with [`LimitReached`](AuthErrorKind::LimitReached) at
    /// the store's cap, [`Expired`](AuthErrorKind::Expired) when the credential
    /// has no lifetime left, [`Unavailable`](AuthErrorKind::Unavailable) when
    /// the backend is down.
    fn issue(&self, verified: Verified<Self::Identity>, ttl: Duration) -> Self::IssueFuture;

    /// Redeem `ticket`: the identity it was issued for, once.
    ///
    /// The future fails with [`Invalid`](AuthErrorKind::Invalid) for an
    /// unknown, used or expired ticket, and
    /// [`Unavailable`](AuthErrorKind::Unavailable) when the backend is down.
    fn redeem(&self, ticket: Credential) -> Self::RedeemFuture;

    /// Redeem without waiting, for stores that can (the memory store). The
    /// default hands back the future of [`redeem`](Self::redeem).
    fn redeem_now(&self, ticket: Credential) -> Verification<Self::RedeemFuture, Self::Identity> {
        Verification::Pending(self.redeem(ticket))
    }

    /// The subject of an identity, for logs (stores whose identities are a
    /// [`Subject`](crate::Subject) say it).
    fn subject_of<'a>(&self, identity: &'a Self::Identity) -> Option<&'a str> {
        let _ = identity;
        None
    }

    /// A [`Verifier`] that redeems tickets from this store, for the upgrade
    /// layer or first-message auth.
    fn verifier(&self) -> TicketVerifier<Self>
    where
        Self: Clone + Sized,
    {
        TicketVerifier {
            store: self.clone(),
        }
    }
}

/// Verifies a credential by redeeming it as a ticket. Get one from
/// [`TicketStore::verifier`].
#[derive(Clone, Debug)]
pub struct TicketVerifier<St> {
    store: St,
}

impl<St: TicketStore> Verifier for TicketVerifier<St> {
    type Identity = St::Identity;
    type Future = St::RedeemFuture;

    fn verify(&self, credential: Credential) -> Self::Future {
        self.store.redeem(credential)
    }

    fn verify_now(&self, credential: Credential) -> Verification<Self::Future, Self::Identity> {
        self.store.redeem_now(credential)
    }

    fn subject_of<'a>(&self, identity: &'a Self::Identity) -> Option<&'a str> {
        self.store.subject_of(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_43_chars_distinct_and_redacted() {
        let a = Ticket::generate().unwrap();
        let b = Ticket::generate().unwrap();
        assert_eq!(a.expose_secret().len(), TICKET_LEN);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(ticket_key(a.expose_secret()).is_some());
        assert_eq!(format!("{a:?}"), "Ticket([redacted])");
        assert!(ticket_key("short").is_none());
        assert!(ticket_key(&"=".repeat(TICKET_LEN)).is_none());
    }
}
