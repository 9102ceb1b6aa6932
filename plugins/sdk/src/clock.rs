//! The clock is a service so tests can move time (token expiry, quotas at day boundaries).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::time::{Timestamp, from_millis};

pub trait Clock: Send + Sync + 'static {
    fn now_millis(&self) -> i64;
    fn now(&self) -> Timestamp {
        from_millis(self.now_millis())
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// Wall-clock time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// Wall-clock time plus an offset that can be moved (for tests driven through config).
#[derive(Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    pub fn new(offset_ms: i64) -> Self {
        OffsetClock {
            offset_ms: AtomicI64::new(offset_ms),
        }
    }
    pub fn advance(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Clock for OffsetClock {
    fn now_millis(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.offset_ms.load(Ordering::Relaxed)
    }
}
