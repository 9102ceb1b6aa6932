//! Rate-limit counters, on one node or two sharing them.

use confab_sdk::ratelimit::{Rate, RateLimitStore};

use super::Advance;

/// `a` and, when the backend has more than one node, `b` sharing its counters.
pub async fn ratelimit_store(a: &dyn RateLimitStore, b: Option<&dyn RateLimitStore>, advance: Advance) {
    let b = b.unwrap_or(a);
    // 10/s with a burst of 3: exactly three at once (alternating nodes), then refused.
    let rate = Rate::parse("10/s", 3).unwrap();
    for (i, node) in [a, b, a].into_iter().enumerate() {
        let d = node.check("k", rate).await.unwrap();
        assert!(d.allowed, "request {i} is within the burst");
        assert_eq!((d.limit, d.remaining), (3, 2 - i as u64));
        assert!(d.reset_after_ms > 0 && d.reset_after_ms <= 300, "{d:?}");
    }
    let no = b.check("k", rate).await.unwrap();
    assert!(!no.allowed && no.remaining == 0, "{no:?}");
    assert!((1..=100).contains(&no.retry_after_ms), "{no:?}");
    assert!(
        !a.check("k", rate).await.unwrap().allowed,
        "a refusal is not counted but still refused"
    );
    assert!(a.check("other", rate).await.unwrap().allowed, "keys are independent");
    // One interval brings one request back; a whole window the whole burst.
    advance(no.retry_after_ms + 20).await;
    assert!(a.check("k", rate).await.unwrap().allowed);
    assert!(!b.check("k", rate).await.unwrap().allowed);
    advance(400).await;
    assert_eq!(b.check("k", rate).await.unwrap().remaining, 2);

    // Quotas: `limit` per window, refusals not counted, a new window starts at zero.
    for (i, node) in [a, b].into_iter().enumerate() {
        let d = node.quota("q", 7, 2, 5_000).await.unwrap();
        assert!(d.allowed && d.remaining == 1 - i as u64, "{d:?}");
    }
    let no = a.quota("q", 7, 2, 5_000).await.unwrap();
    assert!(!no.allowed, "{no:?}");
    assert_eq!((no.remaining, no.retry_after_ms, no.reset_after_ms), (0, 5_000, 5_000));
    assert!(
        b.quota("q2", 7, 2, 5_000).await.unwrap().allowed,
        "keys are independent"
    );
    let next = b.quota("q", 8, 2, 86_400_000).await.unwrap();
    assert!(
        next.allowed && next.remaining == 1,
        "the next window starts afresh: {next:?}"
    );
}
