//! Rate limits and quotas shared by every node. The ratelimit plugin decides what to limit;
//! a [`RateLimitStore`] (in-process or Redis, one contract suite) keeps the counters.
//!
//! Rates are GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp):
//! a limit of `burst` at `per_sec` admits `burst` requests at once, then one every
//! `1/per_sec` seconds. Quotas count requests in a fixed window (a UTC day) and refuse
//! once the count is reached.

use std::sync::Arc;

use crate::async_trait;
use crate::storage::StorageResult;

/// A sustained rate and a burst. `emission_us` is the time one request "costs".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Microseconds between two requests at the sustained rate (at least 1).
    pub emission_us: u64,
    /// Requests admitted at once from a full bucket (at least 1).
    pub burst: u32,
}

impl Rate {
    /// Parses `"10/s"`, `"30/min"`, `"100/h"`, `"1000/day"` (also `sec`, `second`,
    /// `m`, `minute`, `hour`, `d`), with `burst`.
    pub fn parse(rate: &str, burst: u32) -> Result<Rate, String> {
        let (n, unit) = rate
            .split_once('/')
            .ok_or_else(|| format!("expected `<count>/<unit>` such as \"10/s\", got {rate:?}"))?;
        let n: u64 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("expected a positive count before `/`, got {rate:?}"))?;
        let unit_us: u64 = match unit.trim() {
            "s" | "sec" | "second" => 1_000_000,
            "m" | "min" | "minute" => 60_000_000,
            "h" | "hour" => 3_600_000_000,
            "d" | "day" => 86_400_000_000,
            other => return Err(format!("unknown unit {other:?}: expected s, min, h or day")),
        };
        if burst == 0 {
            return Err("burst must be at least 1".into());
        }
        Ok(Rate {
            emission_us: (unit_us / n).max(1),
            burst,
        })
    }

    /// The window the whole burst refills in, in microseconds.
    pub fn window_us(&self) -> u64 {
        self.emission_us.saturating_mul(u64::from(self.burst))
    }
}

/// The answer to one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The limit checked (the burst of a rate, the count of a quota).
    pub limit: u64,
    /// Requests still admitted right now after this one.
    pub remaining: u64,
    /// Milliseconds until a refused request may succeed (0 when allowed).
    pub retry_after_ms: u64,
    /// Milliseconds until the limit is whole again (the bucket full, the quota window over).
    pub reset_after_ms: u64,
}

/// The decision of a quota check: `count` of `limit` used in a window that resets in
/// `reset_after_ms`.
pub fn quota_decision(allowed: bool, count: u64, limit: u64, reset_after_ms: u64) -> Decision {
    Decision {
        allowed,
        limit,
        remaining: limit.saturating_sub(count),
        retry_after_ms: if allowed { 0 } else { reset_after_ms.max(1) },
        reset_after_ms,
    }
}

/// GCRA on one stored value, the theoretical arrival time (TAT) in microseconds. Returns
/// the decision and the new TAT to store (`None`: store nothing). The Redis store runs the
/// same arithmetic in Lua; this is the reference and the in-process implementation.
pub fn gcra(now_us: u64, stored_tat_us: Option<u64>, rate: Rate) -> (Decision, Option<u64>) {
    let t = rate.emission_us;
    let window = rate.window_us();
    let tat = stored_tat_us.unwrap_or(now_us).max(now_us);
    let new_tat = tat + t;
    let limit = u64::from(rate.burst);
    // Admitted while the new TAT stays within one window of now.
    if new_tat - now_us > window {
        let retry_us = new_tat - now_us - window;
        let decision = Decision {
            allowed: false,
            limit,
            remaining: 0,
            retry_after_ms: retry_us.div_ceil(1000),
            reset_after_ms: (tat - now_us).div_ceil(1000),
        };
        return (decision, None);
    }
    let decision = Decision {
        allowed: true,
        limit,
        remaining: (window - (new_tat - now_us)) / t,
        retry_after_ms: 0,
        reset_after_ms: (new_tat - now_us).div_ceil(1000),
    };
    (decision, Some(new_tat))
}

/// What one check counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// A GCRA rate: admitted (and counted) or refused (not counted).
    Rate(Rate),
    /// `limit` requests per window. `window` names the current window (the caller's day
    /// number), `reset_after_ms` is how long it has left. A refused request is not counted.
    Quota {
        window: i64,
        limit: u64,
        reset_after_ms: u64,
    },
}

/// One rule's check within a [`RateLimitStore::check`] call.
#[derive(Clone, Copy, Debug)]
pub struct Check<'a> {
    /// The rule's name: with `who`, it names the counter.
    pub rule: &'a str,
    pub limit: Limit,
}

/// Counters shared by every node, one per (rule, who); stores add their own prefix.
#[async_trait]
pub trait RateLimitStore: Send + Sync + 'static {
    /// One request of `who` against `checks`, in order, stopping at the first refusal:
    /// the decisions up to and including it (as many as `checks` when all admitted).
    /// Checks admitted before a refusal stay counted, as if each were its own call. A store
    /// may keep one `who`'s counters together so that one call is one round trip.
    async fn check(&self, who: &str, checks: &[Check<'_>]) -> StorageResult<Vec<Decision>>;
}

pub type SharedRateLimitStore = Arc<dyn RateLimitStore>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(Rate::parse("10/s", 20).unwrap().emission_us, 100_000);
        assert_eq!(Rate::parse("30/min", 1).unwrap().emission_us, 2_000_000);
        assert_eq!(Rate::parse(" 2 / h", 1).unwrap().emission_us, 1_800_000_000);
        assert_eq!(Rate::parse("5000000/s", 1).unwrap().emission_us, 1);
        for bad in ["10", "0/s", "x/s", "10/week"] {
            assert!(Rate::parse(bad, 1).is_err(), "{bad}");
        }
        assert!(Rate::parse("1/s", 0).is_err());
    }

    #[test]
    fn gcra_admits_exactly_the_burst_then_one_per_interval() {
        let rate = Rate::parse("10/s", 3).unwrap();
        let mut tat = None;
        let now = 1_000_000_000;
        for left in [2, 1, 0] {
            let (d, t) = gcra(now, tat, rate);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
            tat = t;
        }
        let (d, t) = gcra(now, tat, rate);
        assert!(!d.allowed && t.is_none());
        assert_eq!(d.retry_after_ms, 100);
        assert_eq!(d.reset_after_ms, 300);
        assert!(!gcra(now + 99_999, tat, rate).0.allowed);
        let (d, _) = gcra(now + 100_000, tat, rate);
        assert!(d.allowed && d.remaining == 0);
        // A full window later the whole burst is back.
        assert_eq!(gcra(now + 300_000, tat, rate).0.remaining, 2);
    }
}
