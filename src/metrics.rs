//! Counters and gauges on the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`); without the feature every function here is empty.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `ws_auth_upgrades_total` | counter | `outcome` (`accepted`, `refused`), `source` (`header`, `query`, `cookie`, `subprotocol`, `none`), `reason` (an [`AuthErrorKind`] name, or `none`) |
//! | `ws_auth_first_messages_total` | counter | `outcome`, `reason` |
//! | `ws_auth_tickets_total` | counter | `event` (`issued`, `redeemed`, `refused`, `expired`, `capped`, `evicted`) |
//! | `ws_auth_sockets_closed_total` | counter | `reason`: why first-message auth or the lifetime guard closed a socket, an [`AuthErrorKind`] name (`expired`, `timeout`, `invalid`, `ambiguous`, …) |
//! | `ws_auth_guarded_sockets` | gauge | — |

#![cfg_attr(not(feature = "metrics"), allow(unused_variables))]

use crate::credential::SourceKind;
use crate::error::AuthErrorKind;

/// An upgrade the layer let through (`Some(via)`: authenticated; `None`:
/// anonymous in optional mode) or refused.
pub(crate) fn upgrade(via: Option<SourceKind>, refused: Option<AuthErrorKind>) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "ws_auth_upgrades_total",
        "outcome" => if refused.is_some() { "refused" } else { "accepted" },
        "source" => via.map_or("none", SourceKind::as_str),
        "reason" => refused.map_or("none", AuthErrorKind::as_str),
    )
    .increment(1);
}

/// A first-message authentication that ended.
pub(crate) fn first_message(refused: Option<AuthErrorKind>) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "ws_auth_first_messages_total",
        "outcome" => if refused.is_some() { "refused" } else { "accepted" },
        "reason" => refused.map_or("none", AuthErrorKind::as_str),
    )
    .increment(1);
}

/// Something that happened to tickets, `count` times.
pub(crate) fn tickets(event: &'static str, count: u64) {
    #[cfg(feature = "metrics")]
    if count > 0 {
        metrics::counter!("ws_auth_tickets_total", "event" => event).increment(count);
    }
}

/// A guarded socket closed by the guard.
pub(crate) fn socket_closed(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("ws_auth_sockets_closed_total", "reason" => reason).increment(1);
}

/// Counts a guarded socket for as long as it lives.
#[derive(Debug)]
pub(crate) struct GuardedSocket(());

impl GuardedSocket {
    pub(crate) fn open() -> Self {
        #[cfg(feature = "metrics")]
        metrics::gauge!("ws_auth_guarded_sockets").increment(1.0);
        Self(())
    }
}

impl Drop for GuardedSocket {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        metrics::gauge!("ws_auth_guarded_sockets").decrement(1.0);
    }
}
