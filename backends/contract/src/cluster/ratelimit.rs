//! Rate-limit counters, on one node or two sharing them.

use confab_sdk::ratelimit::{Check, Decision, Limit, Rate, RateLimitStore};

use super::Advance;

async fn one(node: &dyn RateLimitStore, who: &str, rule: &str, limit: Limit) -> Decision {
    let d = node.check(who, &[Check { rule, limit }]).await.unwrap();
    assert_eq!(d.len(), 1, "one check, one decision");
    d[0]
}

/// `a` and, when the backend has more than one node, `b` sharing its counters.
pub async fn ratelimit_store(a: &dyn RateLimitStore, b: Option<&dyn RateLimitStore>, advance: Advance) {
    let b = b.unwrap_or(a);
    // 10/s with a burst of 3: exactly three at once (alternating nodes), then refused.
    let rate = Limit::Rate(Rate::parse("10/s", 3).unwrap());
    for (i, node) in [a, b, a].into_iter().enumerate() {
        let d = one(node, "u", "k", rate).await;
        assert!(d.allowed, "request {i} is within the burst");
        assert_eq!((d.limit, d.remaining), (3, 2 - i as u64));
        assert!(d.reset_after_ms > 0 && d.reset_after_ms <= 300, "{d:?}");
    }
    let no = one(b, "u", "k", rate).await;
    assert!(!no.allowed && no.remaining == 0, "{no:?}");
    assert!((1..=100).contains(&no.retry_after_ms), "{no:?}");
    assert!(
        !one(a, "u", "k", rate).await.allowed,
        "a refusal is not counted but still refused"
    );
    assert!(one(a, "u", "other", rate).await.allowed, "rules are independent");
    assert!(one(a, "v", "k", rate).await.allowed, "clients are independent");
    // One interval brings one request back; a whole window the whole burst.
    advance(no.retry_after_ms + 20).await;
    assert!(one(a, "u", "k", rate).await.allowed);
    assert!(!one(b, "u", "k", rate).await.allowed);
    advance(400).await;
    assert_eq!(one(b, "u", "k", rate).await.remaining, 2);

    // Quotas: `limit` per window, refusals not counted, a new window starts at zero.
    let quota = |window, reset_after_ms| Limit::Quota {
        window,
        limit: 2,
        reset_after_ms,
    };
    for (i, node) in [a, b].into_iter().enumerate() {
        let d = one(node, "u", "q", quota(7, 5_000)).await;
        assert!(d.allowed && d.remaining == 1 - i as u64, "{d:?}");
    }
    let no = one(a, "u", "q", quota(7, 5_000)).await;
    assert!(!no.allowed, "{no:?}");
    assert_eq!((no.remaining, no.retry_after_ms, no.reset_after_ms), (0, 5_000, 5_000));
    assert!(
        one(b, "u", "q2", quota(7, 5_000)).await.allowed,
        "rules are independent"
    );
    let next = one(b, "u", "q", quota(8, 86_400_000)).await;
    assert!(
        next.allowed && next.remaining == 1,
        "the next window starts afresh: {next:?}"
    );

    several_checks_stop_at_the_first_refusal(a, b).await;
}

/// One call with a rate and a quota: both counted while admitted; the first refusal ends
/// the call, and what it admitted before stays counted.
async fn several_checks_stop_at_the_first_refusal(a: &dyn RateLimitStore, b: &dyn RateLimitStore) {
    let checks = [
        Check {
            rule: "burst",
            limit: Limit::Rate(Rate::parse("1/h", 2).unwrap()),
        },
        Check {
            rule: "daily",
            limit: Limit::Quota {
                window: 3,
                limit: 1,
                reset_after_ms: 9_000,
            },
        },
    ];
    let first = a.check("w", &checks).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|d| d.allowed), "{first:?}");
    assert_eq!((first[0].remaining, first[1].remaining), (1, 0));
    // The rate admits the second request, the quota refuses it.
    let second = b.check("w", &checks).await.unwrap();
    assert_eq!(second.len(), 2);
    assert!(second[0].allowed && !second[1].allowed, "{second:?}");
    assert_eq!(second[1].retry_after_ms, 9_000);
    // The rate's burst is now spent (the second request counted there): refused first,
    // and the quota is not asked.
    let third = a.check("w", &checks).await.unwrap();
    assert_eq!(third.len(), 1, "{third:?}");
    assert!(!third[0].allowed);
    assert_eq!(one(b, "w", "daily", checks[1].limit).await.remaining, 0);
    // Whatever the client's id looks like, one call checks all its rules (a store that
    // keeps a client's counters together must manage with these too).
    for who in ["", "}x", "{a}b", "a{b"] {
        let d = a.check(who, &checks).await.unwrap();
        assert_eq!(d.len(), 2, "{who:?}: {d:?}");
        assert!(d.iter().all(|d| d.allowed), "{who:?}: {d:?}");
    }
}
