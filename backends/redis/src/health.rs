//! Whether Redis answers, as seen by this node. Every command reports its outcome here;
//! a monitor task pings while nothing else does. The state changes log once per outage
//! (not once per request), and `/ready` reads it.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use confab_sdk::async_trait;
use confab_sdk::health::HealthCheck;
use confab_sdk::storage::StorageError;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use tokio::sync::watch;

pub struct RedisHealth {
    down: AtomicBool,
    /// The pub/sub connection closed since the last recovery.
    dropped: AtomicBool,
    /// Commands in a row that got no answer in time.
    slow: AtomicU32,
    /// Why it is down, for `/ready`.
    reason: Mutex<String>,
    /// Counts the outages that ended: while cut off this node may have missed
    /// revocations and cross-node events, so the kernel re-checks its sockets then.
    recoveries: watch::Sender<u64>,
}

impl Default for RedisHealth {
    fn default() -> Self {
        RedisHealth {
            down: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            slow: AtomicU32::new(0),
            reason: Mutex::default(),
            recoveries: watch::Sender::new(0),
        }
    }
}

impl RedisHealth {
    /// Changes each time an outage ends.
    pub fn recoveries(&self) -> watch::Receiver<u64> {
        self.recoveries.subscribe()
    }

    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    /// Redis did not answer. Logs only when this starts an outage.
    pub fn failed(&self, cause: &dyn std::fmt::Display) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = cause.to_string();
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                error = %cause,
                "redis unavailable: serving what this node can (local deliveries, storage); \
                 sessions, presence and cross-node delivery resume when it returns"
            );
        }
    }

    /// The monitor's ping got no answer in time. One slow ping (a large script, a busy
    /// moment) is not an outage; this many in a row are, until a ping succeeds.
    pub fn timed_out(&self, cause: &dyn std::fmt::Display) {
        const IN_A_ROW: u32 = 3;
        if self.slow.fetch_add(1, Ordering::AcqRel) + 1 >= IN_A_ROW {
            self.failed(cause);
        }
    }

    /// A command failed: an error of the connection is an outage ([`Self::failed`]); a
    /// timeout is not, and is left to the monitor's pings, the only sequential judge (under
    /// load many commands miss their deadline at once while Redis still serves, and an
    /// outage closes every socket of the node when it ends).
    pub fn trouble(&self, e: &(dyn std::error::Error + 'static)) {
        if is_timeout(e) {
            tracing::debug!(error = %e, "a redis command timed out");
        } else {
            self.failed(&e);
        }
    }

    /// A command was answered in time.
    pub fn answered(&self) {
        self.slow.store(0, Ordering::Release);
    }

    /// The pub/sub connection closed: messages published until it is back are lost to
    /// this node even if it reconnects before any command fails.
    pub fn dropped(&self) {
        self.dropped.store(true, Ordering::Release);
    }

    /// Redis answered (both connections, from the monitor). Logs only when this ends an
    /// outage; a dropped pub/sub connection counts as one.
    pub fn recovered(&self) {
        self.slow.store(0, Ordering::Release);
        let was_down = self.down.swap(false, Ordering::AcqRel);
        let dropped = self.dropped.swap(false, Ordering::AcqRel);
        if was_down || dropped {
            if was_down {
                tracing::info!("redis available again");
            } else {
                tracing::info!("redis pub/sub reconnected: cross-node events may have been missed");
            }
            self.recoveries.send_modify(|n| *n += 1);
        }
    }

    fn reason(&self) -> String {
        self.reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Whether an error means "Redis is unreachable or not serving" (retry later) rather than
/// a mistake in what was sent, which retrying would not fix.
pub fn is_outage(e: &RedisError) -> bool {
    !matches!(
        e.kind(),
        ErrorKind::Server(ServerErrorKind::ResponseError)
            | ErrorKind::Server(ServerErrorKind::NoScript)
            | ErrorKind::Server(ServerErrorKind::NoPerm)
            | ErrorKind::Server(ServerErrorKind::CrossSlot)
            | ErrorKind::UnexpectedReturnType
            | ErrorKind::Parse
            | ErrorKind::InvalidClientConfig
    )
}

/// Whether `e`, or an error it wraps, is a command that got no answer in time.
pub fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<RedisError>()
            && r.is_timeout()
        {
            return true;
        }
        let bus = match e.downcast_ref::<socketioxide_redis::Error<crate::fanout::BusDriver>>() {
            // The adapter's wrapper names no source.
            Some(socketioxide_redis::Error::Driver(b)) => Some(b),
            _ => e.downcast_ref::<crate::fanout::BusError>(),
        };
        match bus {
            Some(crate::fanout::BusError::Timeout(_)) => return true,
            Some(crate::fanout::BusError::Redis(r)) if r.is_timeout() => return true,
            _ => {}
        }
        next = e.source();
    }
    false
}

/// The storage error for a failed command: an outage is `Busy` (503, retry), anything else
/// a backend error (500, logged).
pub fn storage_error(health: &RedisHealth, e: RedisError) -> StorageError {
    if is_outage(&e) {
        health.trouble(&e);
        StorageError::Busy
    } else {
        StorageError::Backend(format!("redis: {e}"))
    }
}

/// `/ready`'s `redis` check: the state the commands and the monitor observed.
pub struct RedisCheck(pub Arc<RedisHealth>);

#[async_trait]
impl HealthCheck for RedisCheck {
    fn name(&self) -> &str {
        "redis"
    }
    async fn check(&self) -> Result<(), String> {
        if self.0.is_up() {
            Ok(())
        } else {
            Err(format!("redis unavailable: {}", self.0.reason()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slow_command_is_not_an_outage() {
        let h = RedisHealth::default();
        let recoveries = h.recoveries();
        h.timed_out(&"slow");
        h.timed_out(&"slow");
        h.answered();
        h.timed_out(&"slow");
        h.timed_out(&"slow");
        assert!(h.is_up(), "never three in a row");
        h.timed_out(&"slow");
        assert!(!h.is_up(), "three in a row");
        assert_eq!(h.reason(), "slow");
        assert_eq!(*recoveries.borrow(), 0);
        h.recovered();
        assert!(h.is_up());
        h.recovered();
        assert_eq!(*recoveries.borrow(), 1, "one recovery per outage");
        h.timed_out(&"slow");
        assert!(h.is_up(), "recovering starts the count again");
    }

    #[test]
    fn a_timed_out_publish_is_a_slow_command_wrapped_or_not() {
        use crate::fanout::{BusDriver, BusError};
        let bare = BusError::Timeout(std::time::Duration::from_secs(1));
        assert!(is_timeout(&bare));
        let wrapped = socketioxide::AdapterError::from(Box::new(socketioxide_redis::Error::<BusDriver>::Driver(
            BusError::Timeout(std::time::Duration::from_secs(1)),
        )) as Box<dyn std::error::Error + Send>);
        assert!(is_timeout(&wrapped));
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(!is_timeout(&refused));
        let h = RedisHealth::default();
        h.trouble(&wrapped);
        assert!(h.is_up(), "one timeout is not an outage");
        h.trouble(&refused);
        assert!(!h.is_up(), "a refused connection is");
    }

    #[test]
    fn outages_are_told_apart_from_mistakes() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_outage(&io));
        let h = RedisHealth::default();
        assert!(matches!(storage_error(&h, io), StorageError::Busy));
        assert!(!h.is_up());
        assert!(h.reason().contains("refused"), "{}", h.reason());
        h.recovered();
        assert!(h.is_up());
        let wrong = RedisError::from((ErrorKind::UnexpectedReturnType, "not a string"));
        assert!(!is_outage(&wrong));
        assert!(matches!(storage_error(&h, wrong), StorageError::Backend(_)));
        assert!(h.is_up(), "a mistake is no outage");
    }
}
