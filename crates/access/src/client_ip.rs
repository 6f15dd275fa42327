//! Which address a request came from, for per-IP rate limits and logs.
//!
//! `X-Forwarded-For` is client-controlled text: anyone can prepend fake
//! addresses. It is read only when the socket peer is a trusted proxy, and
//! then from the right, skipping our own proxies, so the answer is the
//! first hop that no trusted proxy vouches for.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// A list of trusted proxy addresses and networks (`TRUSTED_PROXIES`,
/// comma-separated IPs or CIDRs such as `10.0.0.0/8, ::1`). Empty by
/// default: `X-Forwarded-For` is then ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<Network>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    address: IpAddr,
    prefix_len: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u32::from(net).into(),
                u32::from(ip).into(),
                self.prefix_len,
                32,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix_len, 128)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix_len: u8, width: u8) -> bool {
    if prefix_len == 0 {
        return true;
    }
    let shift = u32::from(width - prefix_len);
    (a >> shift) == (b >> shift)
}

/// An entry of `TRUSTED_PROXIES` that is not an IP or CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TRUSTED_PROXIES: {entry:?} is not an IP address or CIDR (e.g. 10.0.0.0/8)")]
pub struct TrustedProxiesError {
    /// The offending entry.
    pub entry: String,
}

impl FromStr for TrustedProxies {
    type Err = TrustedProxiesError;

    /// Parses the comma-separated `TRUSTED_PROXIES` value; blank entries are
    /// skipped so a trailing comma is harmless.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let mut networks = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let error = || TrustedProxiesError {
                entry: entry.to_owned(),
            };
            let (address, prefix_len) = match entry.split_once('/') {
                Some((address, prefix_len)) => {
                    let address: IpAddr = address.trim().parse().map_err(|_| error())?;
                    let prefix_len: u8 = prefix_len.trim().parse().map_err(|_| error())?;
                    (address, prefix_len)
                }
                None => {
                    let address: IpAddr = entry.parse().map_err(|_| error())?;
                    (address, if address.is_ipv4() { 32 } else { 128 })
                }
            };
            let address = address.to_canonical();
            // `::ffff:10.0.0.0/104` means 10.0.0.0/8 once canonicalised.
            let prefix_len = match (entry.contains(':'), address) {
                (true, IpAddr::V4(_)) if prefix_len >= 96 => prefix_len - 96,
                (true, IpAddr::V4(_)) => return Err(error()),
                _ => prefix_len,
            };
            let max = if address.is_ipv4() { 32 } else { 128 };
            if prefix_len > max {
                return Err(error());
            }
            networks.push(Network {
                address,
                prefix_len,
            });
        }
        Ok(Self { networks })
    }
}

impl TrustedProxies {
    /// Trusts nobody: `X-Forwarded-For` is always ignored.
    pub fn none() -> Self {
        Self::default()
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// True when `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|network| network.contains(ip))
    }
}

/// The client's address: the socket peer, or, when the peer is a trusted
/// proxy, the right-most `X-Forwarded-For` entry that is not itself a
/// trusted proxy. Several `X-Forwarded-For` headers should be joined with
/// `,` in order before calling. IPv4-mapped IPv6 addresses come back as
/// IPv4.
pub fn client_ip(
    peer: SocketAddr,
    x_forwarded_for: Option<&str>,
    trusted_proxies: &TrustedProxies,
) -> IpAddr {
    let mut client = peer.ip().to_canonical();
    if !trusted_proxies.contains(client) {
        return client;
    }
    let Some(forwarded) = x_forwarded_for else {
        return client;
    };
    for entry in forwarded.rsplit(',') {
        let Some(hop) = parse_hop(entry.trim()) else {
            // A trusted proxy passed on something unparseable: nothing to its
            // left can be trusted, so the last vouched-for hop is the answer.
            return client;
        };
        client = hop;
        if !trusted_proxies.contains(hop) {
            return hop;
        }
    }
    // Every hop is one of ours: the left-most is the closest to the client.
    client
}

/// An `X-Forwarded-For` entry: a bare IP, or with a port as some proxies
/// write it (`1.2.3.4:5678`, `[2001:db8::1]:443`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    // `[2001:db8::1]` without a port.
    let bracketed = entry.strip_prefix('[')?.strip_suffix(']')?;
    bracketed
        .parse::<Ipv6Addr>()
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &str) -> TrustedProxies {
        list.parse().unwrap()
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_ignores_forwarded_for() {
        let trusted = proxies("10.0.0.0/8");
        assert_eq!(
            client_ip(peer("203.0.113.9"), Some("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(
                peer("203.0.113.9"),
                Some("1.2.3.4"),
                &TrustedProxies::none()
            ),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_peer_gives_rightmost_untrusted_hop() {
        let trusted = proxies("10.0.0.0/8, 192.168.1.1");
        // The client lied by prepending 6.6.6.6; our proxies appended the rest.
        let xff = "6.6.6.6, 198.51.100.7, 192.168.1.1, 10.2.3.4";
        assert_eq!(
            client_ip(peer("10.0.0.1"), Some(xff), &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn trusted_peer_without_header_is_the_client() {
        let trusted = proxies("10.0.0.1");
        assert_eq!(client_ip(peer("10.0.0.1"), None, &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn all_trusted_hops_give_leftmost() {
        let trusted = proxies("10.0.0.0/8");
        assert_eq!(
            client_ip(peer("10.0.0.1"), Some("10.9.9.9, 10.0.0.2"), &trusted),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn garbage_hop_stops_the_walk() {
        let trusted = proxies("10.0.0.0/8");
        assert_eq!(
            client_ip(
                peer("10.0.0.1"),
                Some("1.1.1.1, not-an-ip, 10.0.0.5"),
                &trusted
            ),
            ip("10.0.0.5")
        );
        assert_eq!(
            client_ip(peer("10.0.0.1"), Some("garbage"), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn ports_brackets_and_mapped_addresses() {
        let trusted = proxies("::1, 127.0.0.1");
        assert_eq!(
            client_ip(peer("::1"), Some("[2001:db8::7]:443"), &trusted),
            ip("2001:db8::7")
        );
        assert_eq!(
            client_ip(peer("127.0.0.1"), Some("198.51.100.1:5678"), &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(
                peer("::ffff:127.0.0.1"),
                Some("::ffff:198.51.100.2"),
                &trusted
            ),
            ip("198.51.100.2")
        );
        assert_eq!(
            client_ip(peer("::1"), Some("[2001:db8::8]"), &trusted),
            ip("2001:db8::8")
        );
    }

    #[test]
    fn cidr_parsing() {
        let trusted = proxies("10.0.0.0/8,fd00::/8, 172.16.0.0/12,");
        assert!(trusted.contains(ip("10.255.0.1")));
        assert!(!trusted.contains(ip("11.0.0.1")));
        assert!(trusted.contains(ip("172.31.255.255")));
        assert!(!trusted.contains(ip("172.32.0.0")));
        assert!(trusted.contains(ip("fd12::1")));
        assert!(!trusted.contains(ip("fe80::1")));
        assert!(trusted.contains(ip("::ffff:10.1.1.1")));
        assert!(proxies("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(proxies("::ffff:10.0.0.0/104").contains(ip("10.3.3.3")));
        assert!(proxies("").is_empty());
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "nope",
            "10.0.0.0/x",
            "1.2.3.4/",
        ] {
            let err = bad.parse::<TrustedProxies>().unwrap_err();
            assert_eq!(err.entry, bad);
            assert!(err.to_string().contains("TRUSTED_PROXIES"));
        }
    }
}
