//! Source networks: which addresses may send a contribution feed, as the managed encoders'
//! input security groups say it (`203.0.113.0/24`, `2001:db8::/32`, or one address).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `addr` lies in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Whether `addr` may send, by `allow`: an empty list allows everyone.
pub fn allowed(allow: &[Cidr], addr: IpAddr) -> bool {
    allow.is_empty() || allow.iter().any(|c| c.contains(addr))
}

/// The address of the client behind `peer`: the peer itself, or, when the peer is one of the
/// `trusted` proxies, the nearest address of `X-Forwarded-For` (read from the right) that is
/// not one. Only trusted proxies are believed: a client that writes the header itself to a
/// node it reaches directly gains nothing.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &[Cidr],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let values: Vec<&str> = forwarded_for.into_iter().collect();
    let hops = values
        .iter()
        .rev()
        .flat_map(|v| v.rsplit(','))
        .map(str::trim);
    let mut client = peer;
    for hop in hops.take(MAX_HOPS) {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// The most `X-Forwarded-For` hops read: no real chain of proxies is longer.
const MAX_HOPS: usize = 16;

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}`: expected a network such as 203.0.113.0/24 or an address");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        // Sources are compared as IPv4 when they are IPv4-mapped: so is such a network.
        if let IpAddr::V6(v6) = network
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            let prefix = prefix.checked_sub(96).ok_or_else(|| {
                format!("`{s}`: an IPv4-mapped network needs a prefix of 96 or more")
            })?;
            return Ok(Self {
                network: IpAddr::V4(v4),
                prefix,
            });
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or(Cidr {
            network: IpAddr::from([255, 255, 255, 255]),
            prefix: 32,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net = cidr("203.0.113.0/24");
        assert!(net.contains(ip("203.0.113.77")));
        assert!(!net.contains(ip("203.0.114.1")));
        assert!(net.contains(ip("::ffff:203.0.113.9")), "IPv4-mapped");
        let mapped = cidr("::ffff:203.0.113.0/120");
        assert_eq!(mapped, net, "a mapped network is its IPv4 one");
        assert!(mapped.contains(ip("203.0.113.200")));
        assert!("::ffff:203.0.113.0/64".parse::<Cidr>().is_err());
        assert!(cidr("0.0.0.0/0").contains(ip("198.51.100.1")));
        assert!(cidr("127.0.0.2").contains(ip("127.0.0.2")));
        assert!(!cidr("127.0.0.2").contains(ip("127.0.0.1")));
        let v6 = cidr("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::5")));
        assert!(!v6.contains(ip("203.0.113.1")));
        assert!(allowed(&[], ip("192.0.2.1")), "no list: everyone");
        assert!(!allowed(&[net], ip("192.0.2.1")));
    }

    #[test]
    fn the_client_behind_trusted_proxies() {
        let proxies = [cidr("10.0.0.0/8")];
        let (balancer, viewer) = (ip("10.0.0.5"), ip("198.51.100.7"));
        // Direct: the header is the client's own words, and ignored.
        assert_eq!(client_address(viewer, ["203.0.113.1"], &proxies), viewer);
        // Through the balancer, and through a shield behind it.
        assert_eq!(client_address(balancer, ["198.51.100.7"], &proxies), viewer);
        let chain = ["203.0.113.1, 198.51.100.7", "10.0.0.9"];
        assert_eq!(
            client_address(balancer, chain, &proxies),
            viewer,
            "rightmost untrusted"
        );
        // Garbage stops the walk at the last good hop; no header leaves the peer.
        assert_eq!(client_address(balancer, ["nonsense"], &proxies), balancer);
        assert_eq!(client_address(balancer, [], &proxies), balancer);
        assert_eq!(
            client_address(balancer, ["198.51.100.7"], &[]),
            balancer,
            "no proxy trusted"
        );
    }

    #[test]
    fn malformed_networks_are_refused() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "2001:db8::/129",
            "x/8",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(cidr("10.1.2.3/8").to_string(), "10.1.2.3/8");
    }

    /// Any text in an allow-list parses or is refused, never a panic; a parsed network prints
    /// as something that parses back to it, and contains its own address.
    #[test]
    fn fuzz_cidr() {
        let words = &["/", ".", ":", "::", "ffff", "0", "255", "32", "128", "%"];
        fuzzing::Target::new("cidr").words(words).run(|data| {
            let text = String::from_utf8_lossy(data);
            if let Ok(net) = text.parse::<Cidr>() {
                assert_eq!(net.to_string().parse::<Cidr>(), Ok(net));
                assert!(net.contains(net.network), "{net}");
            }
        });
    }
}
