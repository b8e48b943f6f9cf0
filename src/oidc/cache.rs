//! One issuer's key cache: a key set read without locks, replaced whole by a
//! background task that refreshes it on schedule, on demand (single-flight,
//! rate-limited), and retires it when it has gone stale.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use http::Uri;
use jsonwebtoken::{Algorithm, Validation};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::discovery;
use super::http::{FetchError, HttpClient};
use super::jwks::KeySet;

/// Where an issuer's keys come from.
#[derive(Debug)]
pub(crate) enum Source {
    /// A fixed set, never fetched.
    Fixed,
    /// This JWKS URL.
    Jwks(Uri),
    /// Discovery at this configuration URL, then its `jwks_uri`.
    Discover(Uri),
}

/// The timing rules shared by a verifier's caches.
#[derive(Clone, Debug)]
pub(crate) struct Schedule {
    pub(crate) default_refresh: Duration,
    pub(crate) min_refresh: Duration,
    pub(crate) max_refresh: Duration,
    pub(crate) unknown_key_refresh: Duration,
    pub(crate) max_stale: Duration,
    pub(crate) allow_http: bool,
}

impl Schedule {
    fn refresh_after(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .unwrap_or(self.default_refresh)
            .clamp(self.min_refresh, self.max_refresh)
    }
}

/// The first retry after a failed fetch; doubled each time, up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The key set tokens are verified with right now.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) keys: KeySet,
    /// False before the first successful fetch and once the keys have gone
    /// stale: refusals are then 503, not 401.
    pub(crate) usable: bool,
}

/// One issuer's keys.
#[derive(Debug)]
pub(crate) struct KeyCache {
    pub(crate) issuer: Box<str>,
    source: Source,
    allowlist: Vec<Algorithm>,
    /// The issuer's validation, copied into each key.
    validation: Validation,
    current: ArcSwap<Snapshot>,
    /// Bumped after every fetch attempt, successful or not.
    attempts: watch::Sender<u64>,
    wake: Notify,
    in_flight: AtomicBool,
    last_failed: AtomicBool,
    /// Milliseconds after `epoch` of the last refresh a token asked for.
    last_demand: AtomicU64,
    epoch: Instant,
    schedule: Schedule,
}

const NEVER: u64 = u64::MAX;

/// What a token whose key is not cached should do.
pub(crate) enum Demand {
    /// A refresh is under way (started now or earlier): wait for the next
    /// attempt to finish.
    Wait(watch::Receiver<u64>),
    /// No refresh is possible now (a fixed set, or rate-limited).
    Refused,
}

impl KeyCache {
    pub(crate) fn new(
        issuer: Box<str>,
        source: Source,
        keys: Option<KeySet>,
        allowlist: Vec<Algorithm>,
        validation: Validation,
        schedule: Schedule,
    ) -> Self {
        let usable = keys.is_some();
        // A remote set is fetched as soon as its task starts: tokens arriving
        // before then wait for that fetch rather than ask for another.
        let remote = !matches!(source, Source::Fixed);
        Self {
            issuer,
            source,
            allowlist,
            validation,
            current: ArcSwap::from_pointee(Snapshot {
                keys: keys.unwrap_or_else(KeySet::empty),
                usable,
            }),
            attempts: watch::Sender::new(0),
            wake: Notify::new(),
            in_flight: AtomicBool::new(remote),
            last_failed: AtomicBool::new(false),
            last_demand: AtomicU64::new(NEVER),
            epoch: Instant::now(),
            schedule,
        }
    }

    /// The current key set; no lock, no waiting.
    #[inline]
    pub(crate) fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Whether the last fetch attempt failed.
    pub(crate) fn last_failed(&self) -> bool {
        self.last_failed.load(Ordering::Acquire)
    }

    /// Whether this cache is ever fetched.
    pub(crate) fn is_remote(&self) -> bool {
        !matches!(self.source, Source::Fixed)
    }

    /// Ask for a refresh because a token names a key that is not cached.
    ///
    /// Single-flight: a refresh under way is joined. Rate-limited: otherwise at
    /// most one per `unknown_key_refresh`.
    pub(crate) fn demand(&self) -> Demand {
        if !self.is_remote() {
            return Demand::Refused;
        }
        // Subscribed before looking, so an attempt that ends in between is
        // still seen as a change.
        let mut attempts = self.attempts.subscribe();
        attempts.borrow_and_update();
        if self.in_flight.load(Ordering::Acquire) {
            return Demand::Wait(attempts);
        }
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NEVER - 1);
        let interval =
            u64::try_from(self.schedule.unknown_key_refresh.as_millis()).unwrap_or(NEVER);
        let last = self.last_demand.load(Ordering::Acquire);
        if last != NEVER && now < last.saturating_add(interval) {
            return Demand::Refused;
        }
        if self
            .last_demand
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.wake.notify_one();
        }
        // Lost the race: another token asked at the same moment; its refresh
        // serves this one too.
        Demand::Wait(attempts)
    }

    /// Keep the keys fresh until `stop`'s sender is dropped.
    pub(crate) async fn run(self: Arc<Self>, client: HttpClient, mut stop: watch::Receiver<()>) {
        let mut jwks_uri = match &self.source {
            Source::Fixed => return,
            Source::Jwks(uri) => Some(uri.clone()),
            Source::Discover(_) => None,
        };
        let mut failures: u32 = 0;
        let mut stale_at: Option<Instant> = None;
        loop {
            self.in_flight.store(true, Ordering::Release);
            let outcome = tokio::select! {
                biased;
                _ = stop.changed() => return,
                outcome = self.fetch(&client, &mut jwks_uri) => outcome,
            };
            let now = Instant::now();
            let next = match outcome {
                Ok((keys, max_age)) => {
                    failures = 0;
                    stale_at = Some(now + self.schedule.max_stale);
                    tracing::debug!(issuer = %self.issuer, keys = keys.len(), "provider keys refreshed");
                    self.current
                        .store(Arc::new(Snapshot { keys, usable: true }));
                    self.last_failed.store(false, Ordering::Release);
                    now + self.schedule.refresh_after(max_age)
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(issuer = %self.issuer, %error, "could not refresh the provider's keys");
                    self.last_failed.store(true, Ordering::Release);
                    let exponent = failures.saturating_sub(1).min(16);
                    now + RETRY_FIRST.saturating_mul(1 << exponent).min(RETRY_MAX)
                }
            };
            self.in_flight.store(false, Ordering::Release);
            self.attempts.send_modify(|n| *n = n.wrapping_add(1));

            loop {
                let wake_at = match stale_at {
                    Some(stale) if stale < next => stale,
                    _ => next,
                };
                tokio::select! {
                    biased;
                    _ = stop.changed() => return,
                    () = self.wake.notified() => break,
                    () = tokio::time::sleep_until(wake_at) => {
                        if stale_at.is_some_and(|stale| stale <= Instant::now()) {
                            stale_at = None;
                            tracing::warn!(issuer = %self.issuer, "the provider's keys went stale: refusing its tokens until it answers");
                            self.current.store(Arc::new(Snapshot { keys: KeySet::empty(), usable: false }));
                            continue;
                        }
                        break;
                    }
                }
            }
        }
    }

    async fn fetch(
        &self,
        client: &HttpClient,
        jwks_uri: &mut Option<Uri>,
    ) -> Result<(KeySet, Option<Duration>), FetchError> {
        let uri = match (&*jwks_uri, &self.source) {
            (Some(uri), _) => uri.clone(),
            (None, Source::Discover(configuration)) => {
                let uri = discovery::discover(
                    client,
                    &self.issuer,
                    configuration,
                    self.schedule.allow_http,
                )
                .await?;
                jwks_uri.insert(uri).clone()
            }
            (None, _) => return Err(FetchError::document(&Uri::default(), "no key set URL")),
        };
        let fetched = client.get(&uri).await?;
        let keys = KeySet::parse(&fetched.body, &self.allowlist, &self.validation)
            .map_err(|error| FetchError::document(&uri, error.message()))?;
        if keys.is_empty() {
            // Replacing working keys with none would refuse every token: a
            // set without a usable key counts as a failed fetch.
            return Err(FetchError::document(
                &uri,
                "no key that may verify tokens (a signature key of an allowed algorithm)",
            ));
        }
        Ok((keys, fetched.max_age))
    }
}
