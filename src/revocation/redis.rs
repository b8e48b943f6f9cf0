//! Revocations shared through Redis, for several server instances.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::Duration;

use futures_core::Stream;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::{Backend, Revocations, Shared, Tag, DEFAULT_MAX_RECORDS, DEFAULT_RECORD_TTL};
use crate::error::{AuthError, AuthErrorKind, ConfigError};

/// Default key prefix of revocation records.
pub const DEFAULT_REVOCATION_PREFIX: &str = "ws-revoked:";

const TIMEOUT: Duration = Duration::from_secs(1);

/// Record a revocation and tell every instance. `KEYS` the record; `ARGV`
/// value (cut-off ms, or 1 for a session), TTL ms, channel, message. A
/// subject's cut-off only moves forward.
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local old = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local new = tonumber(ARGV[1])
if new >= old then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
elseif redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
",
    )
});

pub(crate) struct RedisBackend {
    connection: ConnectionManager,
    prefix: Arc<str>,
    in_step: Arc<InStep>,
    follower: OnceLock<tokio::task::AbortHandle>,
}

/// Whether this instance holds every record Redis holds, and a way to wait
/// until it does.
#[derive(Default)]
pub(crate) struct InStep {
    flag: AtomicBool,
    changed: tokio::sync::Notify,
}

impl InStep {
    fn set(&self, in_step: bool) {
        self.flag.store(in_step, Ordering::Release);
        if in_step {
            self.changed.notify_waiters();
        }
    }

    fn get(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        if let Some(follower) = self.follower.get() {
            follower.abort();
        }
    }
}

fn unavailable(error: redis::RedisError) -> AuthError {
    AuthError::new(AuthErrorKind::Unavailable)
        .with_detail("revocation store unavailable")
        .with_source(error)
}

impl RedisBackend {
    fn channel(prefix: &str) -> String {
        format!("{prefix}events")
    }

    fn session_key(prefix: &str, tag: Tag) -> String {
        format!("{prefix}s:{}", tag.to_text())
    }

    fn subject_key(prefix: &str, tag: Tag) -> String {
        format!("{prefix}u:{}", tag.to_text())
    }

    pub(crate) fn in_step(&self) -> Result<(), AuthError> {
        if self.in_step.get() {
            Ok(())
        } else {
            Err(AuthError::new(AuthErrorKind::Unavailable)
                .with_detail("revocations are not in step with Redis"))
        }
    }

    /// Wait until in step, at most `within`. Whether it is.
    pub(crate) async fn wait_in_step(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.in_step.changed.notified();
            if self.in_step.get() {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.in_step.get();
            }
        }
    }

    async fn publish(
        &self,
        key: String,
        value: u64,
        ttl: Duration,
        message: String,
    ) -> Result<(), AuthError> {
        let mut connection = self.connection.clone();
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let _: i64 = PUBLISH
            .key(key)
            .arg(value)
            .arg(ttl)
            .arg(Self::channel(&self.prefix))
            .arg(message)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn publish_session(&self, tag: Tag, ttl: Duration) -> Result<(), AuthError> {
        let key = Self::session_key(&self.prefix, tag);
        self.publish(key, 1, ttl, format!("s:{}", tag.to_text()))
            .await
    }

    pub(crate) async fn publish_subject(
        &self,
        tag: Tag,
        cutoff: u64,
        ttl: Duration,
    ) -> Result<(), AuthError> {
        let key = Self::subject_key(&self.prefix, tag);
        self.publish(key, cutoff, ttl, format!("u:{}:{cutoff}", tag.to_text()))
            .await
    }
}

/// Apply one revocation to this instance: records, then live sockets.
fn apply(shared: &Shared, message: &str, remaining: Option<Duration>) {
    let mut parts = message.split(':');
    let applied = match (
        parts.next(),
        parts.next().and_then(Tag::from_text),
        parts.next(),
    ) {
        (Some("s"), Some(tag), None) => {
            let _ = shared.records.revoke_session(tag, remaining);
            shared.live.revoke_session(tag)
        }
        (Some("u"), Some(tag), Some(cutoff)) => match cutoff.parse::<u64>() {
            Ok(cutoff) => {
                let _ = shared.records.revoke_subject(tag, cutoff, remaining);
                shared.live.revoke_subject(tag, cutoff)
            }
            Err(_) => return,
        },
        _ => return,
    };
    if applied > 0 {
        tracing::info!(
            closed = applied,
            "revocation from another instance closed live sockets"
        );
    }
}

/// Load every record from Redis into this instance, and apply them all to
/// its live sockets: what it missed while it was not subscribed.
async fn resync(
    shared: &Weak<Shared>,
    connection: &mut ConnectionManager,
    prefix: &str,
) -> Result<(), redis::RedisError> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}[su]:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(connection)
            .await?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
            }
            let values: Vec<(Option<u64>, i64)> = pipe.query_async(connection).await?;
            let Some(shared) = shared.upgrade() else {
                return Ok(());
            };
            for (key, (value, pttl)) in keys.iter().zip(values) {
                let (Some(value), Ok(pttl)) = (value, u64::try_from(pttl)) else {
                    continue;
                };
                let Some(rest) = key.strip_prefix(prefix) else {
                    continue;
                };
                let message = match rest.split_once(':') {
                    Some(("s", tag)) => format!("s:{tag}"),
                    Some(("u", tag)) => format!("u:{tag}:{value}"),
                    _ => continue,
                };
                apply(&shared, &message, Some(Duration::from_millis(pttl)));
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Follow the revocation channel for as long as a handle exists: subscribe,
/// resynchronise, apply every message; on any failure mark this instance out
/// of step (upgrades then fail closed) and start again.
async fn follow(
    shared: Weak<Shared>,
    client: redis::Client,
    mut connection: ConnectionManager,
    prefix: Arc<str>,
    in_step: Arc<InStep>,
) {
    let mut delay = Duration::from_millis(50);
    while shared.strong_count() > 0 {
        let outcome: Result<(), redis::RedisError> = async {
            let mut pubsub = tokio::time::timeout(TIMEOUT, client.get_async_pubsub())
                .await
                .map_err(|_| {
                    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
                })??;
            tokio::time::timeout(TIMEOUT, pubsub.subscribe(RedisBackend::channel(&prefix)))
                .await
                .map_err(|_| {
                    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
                })??;
            // Subscribed first, then loaded: nothing falls in between.
            resync(&shared, &mut connection, &prefix).await?;
            in_step.set(true);
            tracing::debug!("revocations in step with Redis");
            let mut messages = pubsub.into_on_message();
            while let Some(message) = poll_fn(|cx| Pin::new(&mut messages).poll_next(cx)).await {
                let Some(shared) = shared.upgrade() else {
                    return Ok(());
                };
                if let Ok(text) = message.get_payload::<String>() {
                    apply(&shared, &text, None);
                }
            }
            Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            )))
        }
        .await;
        in_step.set(false);
        if shared.strong_count() == 0 {
            return;
        }
        if let Err(error) = outcome {
            tracing::warn!(%error, "revocations out of step with Redis; upgrades fail closed until it is back");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        } else {
            delay = Duration::from_millis(50);
        }
    }
}

impl Revocations {
    /// Revocations shared through the Redis at `url`, for several server
    /// instances. Must be called within a tokio runtime.
    ///
    /// - Each revocation is a key with a TTL (the record TTL) and a message
    ///   on a publish/subscribe channel; every instance applies the messages
    ///   to its live sockets at once (within milliseconds on one network).
    /// - Each instance keeps the records in memory, so the check on upgrade
    ///   is an O(1) look-up with no round trip.
    /// - An instance that loses its subscription is out of step: its upgrades
    ///   through [`enforce`](Self::enforce) fail closed (503) until it has
    ///   subscribed again and reloaded every record, which also re-checks its
    ///   live sockets against what it missed. Revoking while Redis is down
    ///   closes this instance's sockets and fails with 503.
    /// - Records survive a Redis restart only if Redis persists them: run it
    ///   with `appendonly yes` (or RDB snapshots, with their window).
    ///
    /// # Errors
    ///
    /// A URL that does not parse.
    pub fn redis(url: &str) -> Result<Self, ConfigError> {
        Self::redis_with_prefix(url, DEFAULT_REVOCATION_PREFIX)
    }

    /// As [`redis`](Self::redis), with another key prefix (to share one Redis
    /// between applications).
    ///
    /// # Errors
    ///
    /// A URL that does not parse.
    pub fn redis_with_prefix(url: &str, prefix: &str) -> Result<Self, ConfigError> {
        let client = redis::Client::open(url)
            .map_err(|e| ConfigError::new(format!("invalid redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| ConfigError::new(format!("redis connection manager: {e}")))?;
        let prefix: Arc<str> = prefix.into();
        let in_step = Arc::new(InStep::default());
        let revocations = Self::with(
            Backend::Redis(RedisBackend {
                connection: connection.clone(),
                prefix: prefix.clone(),
                in_step: in_step.clone(),
                follower: OnceLock::new(),
            }),
            DEFAULT_RECORD_TTL,
            DEFAULT_MAX_RECORDS,
        );
        let follower = tokio::spawn(follow(
            Arc::downgrade(&revocations.shared),
            client,
            connection,
            prefix,
            in_step,
        ));
        if let Backend::Redis(redis) = &revocations.shared.backend {
            let _ = redis.follower.set(follower.abort_handle());
        }
        Ok(revocations)
    }
}
