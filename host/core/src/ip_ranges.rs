//! Address ranges (`10.0.0.0/8`, `::1`, `192.168.1.7`), for the proxies
//! whose `X-Forwarded-For` the server trusts.

use std::net::IpAddr;

/// A set of address ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRanges(Vec<(IpAddr, u8)>);

impl IpRanges {
    /// Parse `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or `addr/n`.
    pub fn parse(items: &[String]) -> Result<IpRanges, String> {
        let mut out = Vec::new();
        for item in items {
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item.as_str(), None),
            };
            let addr: IpAddr =
                addr.trim().parse().map_err(|_| format!("`{item}` is not an IP address or a range like 10.0.0.0/8"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("`{item}`: the prefix length must be 0 to {max}"))?,
            };
            out.push((addr, bits));
        }
        Ok(IpRanges(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is in one of the ranges (IPv4-mapped IPv6 addresses
    /// count as their IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.iter().any(|(net, bits)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), *bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), *bits),
            _ => false,
        })
    }

    /// The client behind `peer`: the peer itself unless it is a trusted
    /// proxy; then the nearest address in `X-Forwarded-For` (read from the
    /// right, the proxies' end) that is not a trusted proxy. Entries a
    /// client could have written are never believed beyond that.
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let Some(list) = forwarded_for else { return peer };
        let mut last = peer;
        for hop in list.rsplit(',').map(str::trim) {
            let Ok(ip) = hop.parse::<IpAddr>() else { return last };
            if !self.contains(ip) {
                return ip;
            }
            last = ip;
        }
        last
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = ((bits / 8) as usize, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[&str]) -> IpRanges {
        IpRanges::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn ranges_match_by_prefix() {
        let r = ranges(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"]);
        assert!(r.contains("10.200.3.4".parse().unwrap()));
        assert!(!r.contains("11.0.0.1".parse().unwrap()));
        assert!(r.contains("192.168.1.7".parse().unwrap()));
        assert!(!r.contains("192.168.1.8".parse().unwrap()));
        assert!(r.contains("fd12::1".parse().unwrap()));
        assert!(r.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(IpRanges::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(IpRanges::parse(&["proxy".into()]).is_err());
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_hop() {
        let r = ranges(&["127.0.0.1", "10.0.0.0/8"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A direct client: its own header is not believed.
        assert_eq!(r.client(ip("203.0.113.9"), Some("1.2.3.4")), ip("203.0.113.9"));
        // Through the proxy chain: the first untrusted from the right.
        assert_eq!(r.client(ip("127.0.0.1"), Some("1.2.3.4, 198.51.100.2, 10.0.0.5")), ip("198.51.100.2"));
        assert_eq!(r.client(ip("127.0.0.1"), None), ip("127.0.0.1"));
        assert_eq!(r.client(ip("127.0.0.1"), Some("garbage")), ip("127.0.0.1"));
        assert_eq!(IpRanges::default().client(ip("127.0.0.1"), Some("1.2.3.4")), ip("127.0.0.1"));
    }
}
