use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{bounded_ttl, ticket_key, unknown_ticket, IssuedTicket, Ticket, TicketStore};
use crate::credential::Credential;
use crate::error::{AuthError, AuthErrorKind, ConfigError};
use crate::verify::Verified;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Tickets in Redis, for several server instances behind a load balancer: a
/// ticket issued by one instance is redeemed, once, by whichever instance the
/// socket reaches.
///
/// One round trip to issue (`SET key value NX PX ttl`) and one to redeem
/// (`GETDEL`, Redis ≥ 6.2), so redemption is atomic across instances. Keys are
/// `<prefix><base64url(SHA-256(ticket))>`: a dump of Redis holds no live
/// ticket. The identity is stored as JSON (serde).
///
/// The connection is a [`ConnectionManager`]: it reconnects on its own. While
/// Redis is unreachable, issuing and redeeming fail with
/// [`Unavailable`](AuthErrorKind::Unavailable) (503 at the endpoint and the
/// upgrade; the connection is refused, never let through), and both work again
/// as soon as Redis is back, without a restart.
pub struct RedisTicketStore<I> {
    connection: ConnectionManager,
    prefix: Arc<str>,
    _identity: PhantomData<fn() -> I>,
}

impl<I> Clone for RedisTicketStore<I> {
    fn clone(&self) -> Self {
        Self {
            connection: self.connection.clone(),
            prefix: Arc::clone(&self.prefix),
            _identity: PhantomData,
        }
    }
}

impl<I> fmt::Debug for RedisTicketStore<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTicketStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

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
            _identity: PhantomData,
        }
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
}

impl<I> TicketStore for RedisTicketStore<I>
where
    I: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    type Identity = I;
    type IssueFuture = BoxFuture<Result<IssuedTicket, AuthError>>;
    type RedeemFuture = BoxFuture<Result<Verified<I>, AuthError>>;

    fn issue(&self, verified: Verified<I>, ttl: Duration) -> Self::IssueFuture {
        let prepared = (|| -> Result<(Ticket, Duration, String, Vec<u8>), AuthError> {
            let ttl = bounded_ttl(&verified, ttl)?;
            let ticket = Ticket::generate()?;
            let hash = ticket_key(ticket.expose_secret()).ok_or_else(unknown_ticket)?;
            let expires_at_ms = verified
                .expires_at
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let value = serde_json::to_vec(&Stored {
                identity: verified.identity,
                expires_at_ms,
            })
            .map_err(|e| AuthError::new(AuthErrorKind::Unavailable).with_source(e))?;
            Ok((ticket, ttl, self.key(&hash), value))
        })();
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let (ticket, ttl, key, value) = prepared?;
            let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(millis)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            if set.is_none() {
                // 256 random bits collided with a live ticket: the RNG is broken.
                return Err(
                    AuthError::new(AuthErrorKind::Unavailable).with_detail("ticket collision")
                );
            }
            Ok(IssuedTicket {
                ticket,
                expires_in: ttl,
            })
        })
    }

    fn redeem(&self, ticket: Credential) -> Self::RedeemFuture {
        let key = ticket_key(ticket.expose_secret()).map(|hash| self.key(&hash));
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let key = key.ok_or_else(unknown_ticket)?;
            let value: Option<Vec<u8>> = redis::cmd("GETDEL")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let value = value.ok_or_else(unknown_ticket)?;
            let stored: Stored<I> = serde_json::from_slice(&value)
                .map_err(|_| unknown_ticket().with_detail("stored ticket does not decode"))?;
            Ok(Verified {
                identity: stored.identity,
                expires_at: stored
                    .expires_at_ms
                    .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
            })
        })
    }
}
