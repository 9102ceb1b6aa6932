//! The edge, before any plugin: the client's address, resolved once per request, and the
//! caps on open connections, in total and per client address, applied when a TCP
//! connection is accepted (salvo's fuse policy). A refused connection is closed at once,
//! before a byte of it is read, and counted in /metrics.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use confab_sdk::net::{ClientIp, limit_key};
use ipnet::IpNet;
use salvo::conn::ConnCtrl;
use salvo::fuse::{ArcConnObserver, ConnObserver, FuseAction, FuseConfig, FuseInfo, FusePolicy};
use salvo::http::HeaderMap;
use salvo::prelude::*;

use crate::metrics::Metrics;

/// Proxies whose `X-Forwarded-For` is believed (`server.trusted_proxies`).
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

/// A CIDR (`10.0.0.0/8`) or a single address.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// One hop of `X-Forwarded-For`: an address, possibly with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`) or in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
        .map(|ip| ip.to_canonical())
}

impl TrustedProxies {
    pub fn new(list: &[String]) -> Self {
        TrustedProxies(list.iter().filter_map(|s| parse_net(s)).collect())
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client: the peer, or when the peer is a trusted proxy the last address of
    /// `X-Forwarded-For` (all its header lines, in order, read as one list) that is not
    /// one, which is the address the nearest untrusted hop connected from. A hop that is
    /// not an address ends the walk there.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let lines: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let mut client = peer;
        for hop in lines.iter().rev().flat_map(|l| l.rsplit(',')) {
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// Resolves the client's address of every request and leaves it in the request's
/// extensions ([`ClientIp`]), where plugins and the Socket.IO handshake find it.
pub struct ClientAddress(pub Arc<TrustedProxies>);

#[async_trait]
impl Handler for ClientAddress {
    async fn handle(&self, req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
        if let Some(peer) = req.remote_addr().clone().into_std() {
            let ip = self.0.resolve(peer.ip(), req.headers());
            req.extensions_mut().insert(ClientIp(ip));
        }
        ctrl.call_next(req, depot, res).await;
    }
}

/// Open connections, in total and per peer address.
struct Counts {
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// The fuse policy of the listener: the caps, and the timeouts for every connection.
pub struct Edge {
    counts: Arc<Counts>,
    max_total: usize,
    max_per_ip: usize,
    proxies: Arc<TrustedProxies>,
    timeouts: FuseConfig,
    metrics: Arc<Metrics>,
}

impl Edge {
    pub fn new(
        max_total: usize,
        max_per_ip: usize,
        proxies: Arc<TrustedProxies>,
        timeouts: FuseConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Edge {
            counts: Arc::new(Counts {
                open: AtomicUsize::new(0),
                per_ip: Mutex::default(),
            }),
            max_total,
            max_per_ip,
            proxies,
            timeouts,
            metrics,
        }
    }

    /// The per-address key of a peer: none for a trusted proxy, whose connections carry
    /// many clients (the total cap still counts them).
    fn key(&self, info: &FuseInfo) -> Option<IpAddr> {
        let ip = info.remote_addr.clone().into_std()?.ip().to_canonical();
        (!self.proxies.trusts(ip)).then(|| limit_key(ip))
    }
}

#[async_trait]
impl FusePolicy for Edge {
    async fn decide(&self, info: &FuseInfo) -> FuseAction {
        if self.counts.open.load(Ordering::Acquire) >= self.max_total {
            self.metrics.connection_refused("total");
            return FuseAction::Reject;
        }
        if let Some(key) = self.key(info) {
            let per_ip = self.counts.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if per_ip.get(&key).copied().unwrap_or(0) >= self.max_per_ip {
                drop(per_ip);
                self.metrics.connection_refused("per_ip");
                return FuseAction::Reject;
            }
        }
        FuseAction::Accept(self.timeouts)
    }

    /// Runs right after an accepting `decide`, on the same accept loop, so nothing else
    /// is counted in between. The returned observer lives as long as the connection
    /// (upgraded WebSockets included) and gives its place back when dropped.
    fn observe(&self, info: &FuseInfo, _ctrl: &ConnCtrl) -> Option<ArcConnObserver> {
        let key = self.key(info);
        self.counts.open.fetch_add(1, Ordering::AcqRel);
        if let Some(key) = key {
            *self
                .counts
                .per_ip
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key)
                .or_default() += 1;
        }
        self.metrics.connection_opened();
        Some(Arc::new(Held {
            counts: self.counts.clone(),
            key,
            metrics: self.metrics.clone(),
        }))
    }
}

/// One open connection's place in the counts.
struct Held {
    counts: Arc<Counts>,
    key: Option<IpAddr>,
    metrics: Arc<Metrics>,
}

impl ConnObserver for Held {}

impl Drop for Held {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(key) = self.key {
            let mut per_ip = self.counts.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&key);
                }
            }
        }
        self.metrics.connection_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salvo::http::HeaderValue;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let p = TrustedProxies::new(&["10.0.0.0/8".into(), "2001:db8::1".into()]);
        let h = headers(&["1.2.3.4"]);
        assert_eq!(
            p.resolve(ip("9.9.9.9"), &h),
            ip("9.9.9.9"),
            "an untrusted peer is the client"
        );
        assert_eq!(p.resolve(ip("10.0.0.5"), &h), ip("1.2.3.4"));
        assert_eq!(p.resolve(ip("10.0.0.5"), &HeaderMap::new()), ip("10.0.0.5"));
        // A client cannot hide behind addresses it writes itself: the walk stops at the
        // first untrusted hop from the right.
        let h = headers(&["6.6.6.6, 1.2.3.4, 10.0.0.7"]);
        assert_eq!(p.resolve(ip("10.0.0.5"), &h), ip("1.2.3.4"));
        assert_eq!(p.resolve(ip("::ffff:10.0.0.5"), &h), ip("1.2.3.4"), "IPv4-mapped peers");
    }

    #[test]
    fn every_forwarded_for_line_is_read_and_ports_are_dropped() {
        let p = TrustedProxies::new(&["10.0.0.0/8".into()]);
        // Two header lines are one list, the later line last.
        let h = headers(&["6.6.6.6", "1.2.3.4:5678, 10.0.0.9"]);
        assert_eq!(p.resolve(ip("10.0.0.5"), &h), ip("1.2.3.4"));
        let h = headers(&["[2001:db8::7]:443"]);
        assert_eq!(p.resolve(ip("10.0.0.5"), &h), ip("2001:db8::7"));
        let h = headers(&["[2001:db8::8]"]);
        assert_eq!(p.resolve(ip("10.0.0.5"), &h), ip("2001:db8::8"));
        // Garbage ends the walk at the last good hop.
        let h = headers(&["1.2.3.4, nonsense, 10.0.0.9"]);
        assert_eq!(p.resolve(ip("10.0.0.5"), &h), ip("10.0.0.9"));
    }
}
