//! The kernel's own configuration sections: `[server]`, `[log]`, `[storage]`, `[cluster]`.

use confab_sdk::config::{ConfigProblem, RunProfile, Section};
use serde::{Deserialize, Serialize};

fn problem(key: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.to_owned(),
        message: message.into(),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Largest accepted HTTP request body, in bytes.
    pub body_limit: usize,
    /// How long graceful shutdown may take before remaining work is abandoned.
    pub shutdown_timeout_secs: u64,
    /// Serve `/metrics` in the Prometheus text format.
    pub metrics: bool,
    /// Serve `/metrics` on this address of its own (`127.0.0.1:9464`) instead of the
    /// public port; empty: on the public port.
    pub metrics_addr: String,
    /// Open TCP connections (HTTP and sockets together); more are closed on accept.
    pub max_connections: usize,
    /// Open TCP connections per client address (IPv6: per /64); trusted proxies are
    /// counted in the total only.
    pub max_connections_per_ip: usize,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<String>,
    /// Time allowed for a request head to arrive (slow-header attacks).
    pub header_timeout_secs: u64,
    /// A connection on which nothing was read or written for this long is closed. Above
    /// the Socket.IO ping interval plus timeout, so live sockets and held polls never trip it.
    pub idle_timeout_secs: u64,
    /// Longest gap between the frames of one request body.
    pub body_timeout_secs: u64,
    /// A write to a connection that stays pending this long fails and closes it: a
    /// client that stops reading (a full TCP window) is cut at the transport, sockets
    /// whose Socket.IO buffer is full included.
    pub write_stall_timeout_secs: u64,
    /// Threads of the async runtime; 0: one per core, less one per thread the storage
    /// backend keeps busy itself (SQLite's writer), at least one.
    pub worker_threads: usize,
    pub cors: CorsConfig,
    pub socket: SocketConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            port: 3000,
            body_limit: 64 * 1024,
            shutdown_timeout_secs: 10,
            metrics: true,
            metrics_addr: String::new(),
            max_connections: 16_384,
            max_connections_per_ip: 12_288,
            trusted_proxies: Vec::new(),
            header_timeout_secs: 10,
            idle_timeout_secs: 120,
            body_timeout_secs: 30,
            write_stall_timeout_secs: 20,
            worker_threads: 0,
            cors: CorsConfig::default(),
            socket: SocketConfig::default(),
        }
    }
}

impl Section for ServerConfig {
    fn validate(&self, _: &RunProfile) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.host.parse::<std::net::IpAddr>().is_err() {
            p.push(problem(
                "host",
                format!(
                    "expected an IP address such as 0.0.0.0 or 127.0.0.1, got {:?}",
                    self.host
                ),
            ));
        }
        if self.body_limit < 1024 {
            p.push(problem("body_limit", "expected at least 1024 bytes"));
        }
        if self.shutdown_timeout_secs == 0 {
            p.push(problem("shutdown_timeout_secs", "expected at least 1 second"));
        }
        if !self.metrics_addr.is_empty() && self.metrics_addr.parse::<std::net::SocketAddr>().is_err() {
            p.push(problem(
                "metrics_addr",
                format!(
                    "expected an address such as 127.0.0.1:9464, got {:?}",
                    self.metrics_addr
                ),
            ));
        }
        if self.worker_threads > 1024 {
            p.push(problem("worker_threads", "expected 0 (automatic) to 1024 threads"));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            p.push(problem("max_connections", "expected 1 to 1000000 connections"));
        }
        if !(1..=self.max_connections.max(1)).contains(&self.max_connections_per_ip) {
            p.push(problem(
                "max_connections_per_ip",
                "expected 1 connection up to max_connections",
            ));
        }
        for (i, net) in self.trusted_proxies.iter().enumerate() {
            if crate::server::edge::parse_net(net).is_none() {
                p.push(problem(
                    &format!("trusted_proxies[{i}]"),
                    format!("expected a CIDR (10.0.0.0/8) or an IP address, got {net:?}"),
                ));
            }
        }
        if !(1..=300).contains(&self.header_timeout_secs) {
            p.push(problem("header_timeout_secs", "expected 1 to 300 seconds"));
        }
        if !(1..=3600).contains(&self.body_timeout_secs) {
            p.push(problem("body_timeout_secs", "expected 1 to 3600 seconds"));
        }
        if !(1..=3600).contains(&self.write_stall_timeout_secs) {
            p.push(problem("write_stall_timeout_secs", "expected 1 to 3600 seconds"));
        }
        let heartbeat = self
            .socket
            .ping_interval_secs
            .saturating_add(self.socket.ping_timeout_secs);
        if self.idle_timeout_secs <= heartbeat || self.idle_timeout_secs > 86_400 {
            p.push(problem(
                "idle_timeout_secs",
                format!(
                    "expected more than socket.ping_interval_secs + socket.ping_timeout_secs ({heartbeat}) and at most 86400 seconds"
                ),
            ));
        }
        if !(1024..=16 << 20).contains(&self.socket.max_payload) {
            p.push(problem("socket.max_payload", "expected 1024 to 16777216 bytes"));
        }
        if !(1..=300).contains(&self.socket.connect_timeout_secs) {
            p.push(problem("socket.connect_timeout_secs", "expected 1 to 300 seconds"));
        }
        if !(256..=1 << 20).contains(&self.socket.ws_read_buffer_size) {
            p.push(problem("socket.ws_read_buffer_size", "expected 256 to 1048576 bytes"));
        }
        if self.socket.max_buffer_size == 0 {
            p.push(problem("socket.max_buffer_size", "expected at least 1 packet"));
        }
        if self.socket.ping_interval_secs == 0 {
            p.push(problem("socket.ping_interval_secs", "expected at least 1 second"));
        }
        if self.socket.ping_timeout_secs == 0 {
            p.push(problem("socket.ping_timeout_secs", "expected at least 1 second"));
        }
        if !(1..=65_536).contains(&self.socket.max_in_flight) {
            p.push(problem("socket.max_in_flight", "expected 1 to 65536 events"));
        }
        p
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed to call the API from a browser; `["*"]` allows any (without credentials).
    pub allowed_origins: Vec<String>,
    /// Lets listed origins send cookies. Ignored for `*`.
    pub allow_credentials: bool,
    pub max_age_secs: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: vec!["*".into()],
            allow_credentials: true,
            max_age_secs: 600,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketConfig {
    /// Largest message a client may send, in bytes: a long-polling request body, and a
    /// WebSocket message and frame (bounded as they arrive, before authentication).
    pub max_payload: u64,
    /// Time from opening a connection to completing the Socket.IO CONNECT.
    pub connect_timeout_secs: u64,
    /// Packets buffered per socket before emits to it are dropped (slow clients).
    pub max_buffer_size: usize,
    pub ping_interval_secs: u64,
    pub ping_timeout_secs: u64,
    /// Events of one socket being processed at once; more are refused with `unavailable`.
    pub max_in_flight: usize,
    /// Bytes a WebSocket reads from the network at a time. Every socket keeps a buffer of
    /// this size for its lifetime; a bigger frame grows it while it is read.
    pub ws_read_buffer_size: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            max_payload: 64 * 1024,
            connect_timeout_secs: 10,
            max_buffer_size: 128,
            ping_interval_secs: 25,
            ping_timeout_secs: 20,
            max_in_flight: 64,
            ws_read_buffer_size: 1024,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `confab=debug,salvo=warn`); `RUST_LOG` wins when set.
    pub level: String,
    /// `pretty` or `json`; `--log-format` wins when given.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "pretty".into(),
        }
    }
}

impl Section for LogConfig {
    fn validate(&self, _: &RunProfile) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if !matches!(self.format.as_str(), "pretty" | "json") {
            p.push(problem(
                "format",
                format!("expected \"pretty\" or \"json\", got {:?}", self.format),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            p.push(problem(
                "level",
                format!("expected a tracing filter such as \"info\", got {:?}", self.level),
            ));
        }
        p
    }
}
