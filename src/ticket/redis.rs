use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use redis::Script;
use sha2::{Digest, Sha256};

use super::{
    bounded_ttl, ticket_key, unknown_ticket, IssuedTicket, Ticket, TicketStore,
    DEFAULT_MAX_TICKETS, DEFAULT_MAX_TICKETS_PER_SUBJECT,
};
use crate::credential::Credential;
use crate::error::{AuthError, AuthErrorKind, ConfigError};
use crate::metrics;
use crate::verify::{Subject, Verified};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Tickets in Redis, for several server instances behind a load balancer: a
/// ticket issued by one instance is redeemed, once, by whichever instance the
/// socket reaches.
///
/// One round trip to issue and one to redeem, each a Lua script that Redis
/// runs atomically (Redis ≥ 6.2), so redemption is exactly-once across
/// instances. Keys are `<prefix><base64url(SHA-256(ticket))>`: a dump of Redis
/// holds no live ticket. The identity is stored as JSON (serde).
///
/// # Caps
///
/// Outstanding tickets are capped per [`Subject`] (default
/// [`DEFAULT_MAX_TICKETS_PER_SUBJECT`]; over it, issuing fails with
/// [`LimitReached`](AuthErrorKind::LimitReached), 429 at the endpoint) and in
/// total (default [`DEFAULT_MAX_TICKETS`]; over it, the ticket closest to
/// expiry is dropped, as in the memory store, so a flood from many identities
/// cannot lock a new user out). Both counts live in Redis sorted sets updated
/// in the same script as the ticket, so the caps hold across instances and
/// concurrent requests, with Redis's own clock. The scripts touch keys they
/// compute: use one Redis (or one primary), not a Redis Cluster.
///
/// # Failures
///
/// The connection is a [`ConnectionManager`]: it reconnects on its own. While
/// Redis is unreachable, issuing and redeeming fail with
/// [`Unavailable`](AuthErrorKind::Unavailable) (503 at the endpoint and the
/// upgrade; the connection is refused, never let through), and both work again
/// as soon as Redis is back, without a restart.
///
/// A redemption that times out (1 s) is refused with 503, and the ticket must
/// be taken as spent: Redis may have run the script before the answer was
/// lost. A client that sees 503 fetches a new ticket.
pub struct RedisTicketStore<I> {
    connection: ConnectionManager,
    prefix: Arc<str>,
    max_total: usize,
    max_per_subject: usize,
    _identity: PhantomData<fn() -> I>,
}

impl<I> Clone for RedisTicketStore<I> {
    fn clone(&self) -> Self {
        Self {
            connection: self.connection.clone(),
            prefix: Arc::clone(&self.prefix),
            max_total: self.max_total,
            max_per_subject: self.max_per_subject,
            _identity: PhantomData,
        }
    }
}

impl<I> fmt::Debug for RedisTicketStore<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTicketStore")
            .field("prefix", &self.prefix)
            .field("max_total", &self.max_total)
            .field("max_per_subject", &self.max_per_subject)
            .finish_non_exhaustive()
    }
}

/// Issue: `KEYS` ticket, the subject's set, the set of all tickets; `ARGV`
/// stored value, TTL in ms, cap per subject, cap in total, subject-set prefix.
/// Returns 1 when issued, -1 at the subject's cap, 0 on a ticket collision.
static ISSUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
while redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[4]) do
  local oldest = redis.call('ZPOPMIN', KEYS[3])
  if not oldest[1] then break end
  local v = redis.call('GETDEL', oldest[1])
  if v then
    local sep = string.find(v, '|', 1, true)
    if sep then redis.call('ZREM', ARGV[5] .. string.sub(v, 1, sep - 1), oldest[1]) end
  end
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ttl) then return 0 end
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('ZADD', KEYS[3], now + ttl, KEYS[1])
return 1
",
    )
});

/// Redeem: `KEYS` ticket, the set of all tickets; `ARGV` subject-set prefix.
/// Returns the stored identity once, then nil.
static REDEEM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GETDEL', KEYS[1])
if not v then return false end
redis.call('ZREM', KEYS[2], KEYS[1])
local sep = string.find(v, '|', 1, true)
if not sep then return v end
redis.call('ZREM', ARGV[1] .. string.sub(v, 1, sep - 1), KEYS[1])
return string.sub(v, sep + 1)
",
    )
});

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "ws-ticket:";

#[derive(Serialize, Deserialize)]
struct Stored<I> {
    #[serde(rename = "i")]
    identity: I,
    /// The credential's expiry, milliseconds since the Unix epoch.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
}

fn unavailable(error: redis::RedisError) -> AuthError {
    AuthError::new(AuthErrorKind::Unavailable)
        .with_detail("ticket store unavailable")
        .with_source(error)
}

impl<I> RedisTicketStore<I> {
    /// A store on the Redis at `url` (`redis://host:port/db`), with
    /// [`DEFAULT_PREFIX`]. The connection is made lazily, so this succeeds even
    /// while Redis is down; each operation times out after 1 s.
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// A URL that does not parse.
    pub fn open(url: &str) -> Result<Self, ConfigError> {
        let client = redis::Client::open(url)
            .map_err(|e| ConfigError::new(format!("invalid redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| ConfigError::new(format!("redis connection manager: {e}")))?;
        Ok(Self::with_connection(connection))
    }

    /// A store over an existing connection manager.
    pub fn with_connection(connection: ConnectionManager) -> Self {
        Self {
            connection,
            prefix: DEFAULT_PREFIX.into(),
            max_total: DEFAULT_MAX_TICKETS,
            max_per_subject: DEFAULT_MAX_TICKETS_PER_SUBJECT,
            _identity: PhantomData,
        }
    }

    /// Caps on outstanding tickets: in total (the ticket closest to expiry is
    /// dropped beyond it) and per subject (issuing fails beyond it).
    #[must_use]
    pub fn limits(mut self, max_total: usize, max_per_subject: usize) -> Self {
        self.max_total = max_total.max(1);
        self.max_per_subject = max_per_subject;
        self
    }

    /// Key prefix, to share one Redis between applications.
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn key(&self, hash: &[u8; 32]) -> String {
        format!("{}{}", self.prefix, URL_SAFE_NO_PAD.encode(hash))
    }

    /// Prefix of the per-subject sets (`:` never occurs in a ticket key).
    fn subject_prefix(&self) -> String {
        format!("{}s:", self.prefix)
    }

    fn all_key(&self) -> String {
        format!("{}all", self.prefix)
    }
}

/// A short, fixed-length tag for a subject: the key of its set of tickets.
fn subject_tag(subject: &str) -> String {
    let digest: [u8; 32] = Sha256::digest(subject.as_bytes()).into();
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

impl<I> TicketStore for RedisTicketStore<I>
where
    I: Subject + Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    type Identity = I;
    type IssueFuture = BoxFuture<Result<IssuedTicket, AuthError>>;
    type RedeemFuture = BoxFuture<Result<Verified<I>, AuthError>>;

    fn issue(&self, verified: Verified<I>, ttl: Duration) -> Self::IssueFuture {
        let subject: Box<str> = verified.identity.subject().into();
        let prepared = (|| -> Result<(Ticket, Duration, [String; 2], Vec<u8>), AuthError> {
            let ttl = bounded_ttl(&verified, ttl)?;
            let ticket = Ticket::generate()?;
            let hash = ticket_key(ticket.expose_secret()).ok_or_else(unknown_ticket)?;
            let expires_at_ms = verified
                .expires_at
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let subject = subject_tag(&subject);
            // `<subject tag>|<identity JSON>`: the redeem script finds the
            // subject's set without decoding the JSON.
            let mut value = Vec::with_capacity(subject.len() + 64);
            value.extend_from_slice(subject.as_bytes());
            value.push(b'|');
            serde_json::to_writer(
                &mut value,
                &Stored {
                    identity: verified.identity,
                    expires_at_ms,
                },
            )
            .map_err(|e| AuthError::new(AuthErrorKind::Unavailable).with_source(e))?;
            let keys = [
                self.key(&hash),
                format!("{}{subject}", self.subject_prefix()),
            ];
            Ok((ticket, ttl, keys, value))
        })();
        let all_key = self.all_key();
        let subject_prefix = self.subject_prefix();
        let (max_total, max_per_subject) = (self.max_total, self.max_per_subject);
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let (ticket, ttl, [key, subject_key], value) = prepared?;
            let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let outcome: i64 = ISSUE
                .key(&key)
                .key(&subject_key)
                .key(&all_key)
                .arg(value)
                .arg(millis)
                .arg(max_per_subject)
                .arg(max_total)
                .arg(&subject_prefix)
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            match outcome {
                1 => {
                    tracing::debug!(subject = &*subject, "ticket issued");
                    metrics::tickets("issued", 1);
                    Ok(IssuedTicket {
                        ticket,
                        expires_in: ttl,
                    })
                }
                -1 => {
                    tracing::info!(subject = &*subject, "ticket cap reached for this identity");
                    metrics::tickets("capped", 1);
                    Err(AuthError::new(AuthErrorKind::LimitReached)
                        .with_detail("too many outstanding tickets for this identity"))
                }
                // 256 random bits collided with a live ticket: the RNG is broken.
                _ => {
                    Err(AuthError::new(AuthErrorKind::Unavailable).with_detail("ticket collision"))
                }
            }
        })
    }

    fn subject_of<'a>(&self, identity: &'a I) -> Option<&'a str> {
        Some(identity.subject())
    }

    fn redeem(&self, ticket: Credential) -> Self::RedeemFuture {
        let key = ticket_key(ticket.expose_secret()).map(|hash| self.key(&hash));
        let all_key = self.all_key();
        let subject_prefix = self.subject_prefix();
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let key = key.ok_or_else(unknown_ticket)?;
            let value: Option<Vec<u8>> = REDEEM
                .key(&key)
                .key(&all_key)
                .arg(&subject_prefix)
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let Some(value) = value else {
                metrics::tickets("refused", 1);
                return Err(unknown_ticket());
            };
            let stored: Stored<I> = serde_json::from_slice(&value)
                .map_err(|_| unknown_ticket().with_detail("stored ticket does not decode"))?;
            tracing::debug!(subject = stored.identity.subject(), "ticket redeemed");
            metrics::tickets("redeemed", 1);
            Ok(Verified {
                identity: stored.identity,
                expires_at: stored
                    .expires_at_ms
                    .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms))),
            })
        })
    }
}
