//! What the servers report about a run: CPU time from `/proc/<pid>/stat` (every thread of
//! the process) and the server-side latency histogram of `send_message` from `/metrics`
//! (`confab_socket_event_duration_seconds`), both as differences over the run.

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds the process has used.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// The cumulative buckets of one event's duration histogram: (upper bound in seconds,
/// count), in order, `+Inf` last.
pub type Buckets = Vec<(f64, u64)>;

/// Reads `event`'s histogram from the server's `/metrics`.
pub async fn event_buckets(http: &reqwest::Client, url: &str, event: &str) -> Option<Buckets> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("confab_socket_event_duration_seconds_bucket{{event=\"{event}\",le=\"");
    let buckets: Buckets = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| {
            let (le, count) = l.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    (!buckets.is_empty()).then_some(buckets)
}

/// `p50/p99` (the upper bound of the bucket each falls in) of the events counted between
/// `before` and `after`.
pub fn summary(before: &Buckets, after: &Buckets) -> String {
    let diff: Vec<(f64, u64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before.iter().find(|(b, _)| b == le).map_or(0, |(_, c)| *c);
            (*le, n.saturating_sub(was))
        })
        .collect();
    let total = diff.last().map_or(0, |(_, n)| *n);
    if total == 0 {
        return "no events".into();
    }
    let at = |q: f64| {
        let want = (total as f64 * q).ceil() as u64;
        let le = diff
            .iter()
            .find(|(_, n)| *n >= want)
            .map_or(f64::INFINITY, |(le, _)| *le);
        if le.is_finite() {
            format!("<= {:.2} ms", le * 1000.0)
        } else {
            "over the largest bucket".into()
        }
    };
    format!("{total} events, p50 {}, p99 {}", at(0.5), at(0.99))
}
