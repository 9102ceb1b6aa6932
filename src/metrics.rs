//! Prometheus metrics in the text exposition format, kept by hand: a few counters and
//! histograms do not justify a metrics framework on the hot path.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use confab_sdk::live::LiveCounters;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Socket events are judged in fractions of a millisecond (issue 18: p99 under 2 ms).
const EVENT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.1, 1.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// A histogram with fixed buckets.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add((v * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// One socket event's figures, made when its handler is installed and shared by every
/// socket, so counting one costs atomics and no lock.
pub struct EventStats {
    received: AtomicU64,
    /// From the event's arrival to its handler's end: the ack and the emits it made are
    /// handed to the sockets' buffers by then.
    duration: Histogram,
}

impl EventStats {
    pub fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub fn handled(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }
}

#[derive(PartialEq, Eq, Hash, PartialOrd, Ord, Clone)]
struct HttpKey {
    route: String,
    method: String,
    status: u16,
}

pub struct Metrics {
    /// Sockets and stream deliveries, counted where the cluster backends deliver too.
    pub live: Arc<LiveCounters>,
    http_requests: Mutex<HashMap<HttpKey, u64>>,
    http_latency: Mutex<HashMap<String, Histogram>>,
    open_connections: AtomicI64,
    /// Connections closed on accept: over the total cap, over the per-address cap.
    refused_total: AtomicU64,
    refused_per_ip: AtomicU64,
    socket_events: Mutex<BTreeMap<String, Arc<EventStats>>>,
    /// Events no handler knows, whatever their name.
    unknown_events: AtomicU64,
    commit_batch: Histogram,
    commit_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            live: Arc::default(),
            http_requests: Mutex::default(),
            http_latency: Mutex::default(),
            open_connections: AtomicI64::new(0),
            refused_total: AtomicU64::new(0),
            refused_per_ip: AtomicU64::new(0),
            socket_events: Mutex::default(),
            unknown_events: AtomicU64::new(0),
            commit_batch: Histogram::new(BATCH_BUCKETS),
            commit_latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

/// Standard methods keep their name; anything a client invents counts as `OTHER`.
fn bounded_method(method: &str) -> &str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    if KNOWN.contains(&method) { method } else { "OTHER" }
}

impl Metrics {
    pub fn http(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let key = HttpKey {
            route: route.to_owned(),
            method: bounded_method(method).to_owned(),
            status,
        };
        *self
            .http_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
        let mut lat = self.http_latency.lock().unwrap_or_else(|e| e.into_inner());
        lat.entry(route.to_owned())
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// `reason`: `total` or `per_ip`.
    pub fn connection_refused(&self, reason: &str) {
        let counter = if reason == "total" {
            &self.refused_total
        } else {
            &self.refused_per_ip
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The figures of a handled event (one per name, made at install). Events no handler
    /// knows count as `unknown` ([`Metrics::unknown_event`]), so clients cannot add label
    /// values (and memory) by inventing names.
    pub fn event_stats(&self, event: &str) -> Arc<EventStats> {
        let mut m = self.socket_events.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(event.to_owned())
            .or_insert_with(|| {
                Arc::new(EventStats {
                    received: AtomicU64::new(0),
                    duration: Histogram::new(EVENT_BUCKETS),
                })
            })
            .clone()
    }

    pub fn unknown_event(&self) {
        self.unknown_events.fetch_add(1, Ordering::Relaxed);
    }

    pub fn commit(&self, batch: usize, latency: Duration) {
        self.commit_batch.observe(batch as f64);
        self.commit_latency.observe(latency.as_secs_f64());
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP confab_http_requests_total HTTP requests by route, method and status.\n# TYPE confab_http_requests_total counter\n");
        let reqs: BTreeMap<HttpKey, u64> = self
            .http_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (k, v) in reqs {
            let _ = writeln!(
                out,
                "confab_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{}\"}} {v}",
                escape(&k.route),
                k.method,
                k.status
            );
        }
        out.push_str("# HELP confab_http_request_duration_seconds HTTP request latency by route.\n# TYPE confab_http_request_duration_seconds histogram\n");
        {
            let lat = self.http_latency.lock().unwrap_or_else(|e| e.into_inner());
            let mut routes: Vec<_> = lat.keys().collect();
            routes.sort();
            for r in routes {
                lat[r].render(
                    &mut out,
                    "confab_http_request_duration_seconds",
                    &format!("route=\"{}\"", escape(r)),
                );
            }
        }
        self.live.render(&mut out);
        let _ = writeln!(
            out,
            "# HELP confab_open_connections TCP connections open on this node.\n# TYPE confab_open_connections gauge\nconfab_open_connections {}",
            self.open_connections.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP confab_connections_refused_total Connections closed on accept, by the cap they hit.\n# TYPE confab_connections_refused_total counter\n\
             confab_connections_refused_total{{reason=\"total\"}} {}\nconfab_connections_refused_total{{reason=\"per_ip\"}} {}",
            self.refused_total.load(Ordering::Relaxed),
            self.refused_per_ip.load(Ordering::Relaxed)
        );
        out.push_str("# HELP confab_socket_events_total Socket.IO events received, by name.\n# TYPE confab_socket_events_total counter\n");
        let events: Vec<(String, Arc<EventStats>)> = self
            .socket_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in &events {
            let n = v.received.load(Ordering::Relaxed);
            let _ = writeln!(out, "confab_socket_events_total{{event=\"{}\"}} {n}", escape(k));
        }
        let unknown = self.unknown_events.load(Ordering::Relaxed);
        let _ = writeln!(out, "confab_socket_events_total{{event=\"unknown\"}} {unknown}");
        out.push_str("# HELP confab_socket_event_duration_seconds From a socket event's arrival to its handler's end (its ack and emits handed to the sockets), by name.\n# TYPE confab_socket_event_duration_seconds histogram\n");
        for (k, v) in &events {
            v.duration.render(
                &mut out,
                "confab_socket_event_duration_seconds",
                &format!("event=\"{}\"", escape(k)),
            );
        }
        out.push_str("# HELP confab_storage_commit_batch_size Writes per group-commit transaction.\n# TYPE confab_storage_commit_batch_size histogram\n");
        self.commit_batch
            .render(&mut out, "confab_storage_commit_batch_size", "");
        out.push_str("# HELP confab_storage_commit_seconds Group-commit transaction latency.\n# TYPE confab_storage_commit_seconds histogram\n");
        self.commit_latency
            .render(&mut out, "confab_storage_commit_seconds", "");
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.http("/health", "GET", 200, Duration::from_micros(300));
        m.http("/health", "GET", 200, Duration::from_millis(3));
        let send = m.event_stats("send_message");
        send.received();
        send.handled(Duration::from_micros(800));
        m.unknown_event();
        m.http("/other", "MADEUP", 405, Duration::from_micros(300));
        m.commit(3, Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains("confab_http_requests_total{route=\"/health\",method=\"GET\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("confab_http_request_duration_seconds_bucket{route=\"/health\",le=\"0.0005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("confab_http_request_duration_seconds_bucket{route=\"/health\",le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(text.contains("confab_socket_events_total{event=\"send_message\"} 1"));
        assert!(
            text.contains("confab_socket_events_total{event=\"unknown\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("confab_socket_event_duration_seconds_bucket{event=\"send_message\",le=\"0.00075\"} 0")
                && text.contains("confab_socket_event_duration_seconds_bucket{event=\"send_message\",le=\"0.001\"} 1"),
            "{text}"
        );
        assert!(text.contains("method=\"OTHER\",status=\"405\"} 1"), "{text}");
        assert!(
            text.contains("confab_storage_commit_batch_size_bucket{le=\"4\"} 1"),
            "{text}"
        );
        assert!(text.contains("confab_storage_commit_batch_size_count 1"));
    }
}
