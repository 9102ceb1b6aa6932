//! The client's address, resolved once per request by the kernel (from the peer and, behind
//! a trusted proxy, `X-Forwarded-For`; `server.trusted_proxies`) and left in the request's
//! extensions, so every plugin and the kernel's own connection caps count the same client.

use std::net::{IpAddr, Ipv6Addr};

use salvo::Request;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The address the kernel resolved for this request (absent only for requests the
    /// kernel did not see, e.g. in-process handler tests).
    pub fn of(req: &Request) -> Option<ClientIp> {
        req.extensions().get::<ClientIp>().copied()
    }

    /// What limits count by: IPv4 addresses one by one, IPv6 by their /64, since one
    /// subscriber is routinely given a whole /64 and can use any address in it.
    pub fn limit_key(&self) -> IpAddr {
        limit_key(self.0)
    }
}

/// See [`ClientIp::limit_key`].
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limit_key(a), limit_key(b));
        assert_ne!(limit_key(a), limit_key(c));
        assert_eq!(limit_key(a).to_string(), "2001:db8:1:2::");
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(limit_key(v4), v4);
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(limit_key(mapped), v4, "IPv4-mapped addresses are IPv4 clients");
    }
}
