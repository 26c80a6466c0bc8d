//! Which addresses deliveries may reach: the guard against server-side request forgery.
//!
//! An endpoint URL is whatever an operator (and, with the admin API, a merchant's system)
//! typed, so without a guard the gateway would POST signed requests into its own network:
//! loopback services, private ranges, the cloud metadata service at 169.254.169.254. The guard
//! refuses every address that is not globally routable — loopback, RFC 1918, carrier-grade
//! NAT, link-local, multicast, unspecified and reserved, and the same addresses hidden in
//! IPv4-mapped, IPv4-compatible, 6to4 and NAT64 IPv6 forms — unless `[egress]
//! allowed_networks` admits the address or its network.
//!
//! It runs twice: on the URL when an endpoint is configured (an IP literal), and at connect
//! time on every address the host name resolved to, so DNS cannot point an accepted name (or
//! `localhost`) at a forbidden address. The connection then goes to exactly the addresses
//! checked, never to a second resolution.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

/// An address or a network in CIDR form (`10.0.0.0/8`, `::1`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is inside this network (an IPv4 network never holds an IPv6 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("`{text}` is not an IP address or a network like 10.0.0.0/8");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| invalid())?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(invalid)?,
            None => bits,
        };
        Ok(Self { address, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// The egress rule every connection follows; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct EgressGuard {
    allowed: Arc<Vec<Network>>,
}

/// A connection the guard refused, with the reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{host} is {kind} ({address}), which endpoints may not reach; an operator can admit it \
     with [egress] allowed_networks"
)]
pub struct Refused {
    pub host: String,
    pub address: IpAddr,
    pub kind: String,
}

impl EgressGuard {
    pub fn new(allowed: Vec<Network>) -> Self {
        Self {
            allowed: Arc::new(allowed),
        }
    }

    /// Why `address` (reached as `host`) may not be connected to, or `None` when it may.
    pub fn check(&self, host: &str, address: IpAddr) -> Result<(), Refused> {
        let embedded = match address {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let admitted = |ip: IpAddr| self.allowed.iter().any(|network| network.contains(ip));
        if admitted(address) || embedded.is_some_and(admitted) {
            return Ok(());
        }
        let kind = match embedded {
            Some(v4) => non_global(v4).map(|kind| format!("an IPv6 form of {v4}, {kind}")),
            None => non_global(address).map(str::to_owned),
        };
        match kind {
            Some(kind) => Err(Refused {
                host: host.to_owned(),
                address,
                kind,
            }),
            None => Ok(()),
        }
    }

    /// Checks an endpoint URL's host before any connection when it is an IP literal. Names
    /// (`localhost` included) are checked on what they resolve to, at every connect.
    pub fn check_host(&self, host: &str) -> Result<(), Refused> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(address) => self.check(host, address),
            Err(_) => Ok(()),
        }
    }

    /// Resolves `host` and returns its addresses if every one of them may be reached.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(ResolveError::Dns)?
            .collect();
        if addresses.is_empty() {
            return Err(ResolveError::Dns(std::io::Error::other(format!(
                "{host} resolved to no address"
            ))));
        }
        for address in &addresses {
            self.check(host, address.ip())?;
        }
        Ok(addresses)
    }
}

/// A host name that could not be turned into addresses the guard admits.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve the host: {0}")]
    Dns(std::io::Error),
    #[error("refused to connect: {0}")]
    Refused(#[from] Refused),
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), 6to4 (`2002:AABB:CCDD::/48`) or NAT64 (`64:ff9b::a.b.c.d`).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = v6.segments();
    let low = Ipv4Addr::from(u32::try_from(u128::from(v6) & 0xffff_ffff).ok()?);
    match segments {
        [0, 0, 0, 0, 0, 0, _, _] if !v6.is_unspecified() && !v6.is_loopback() => Some(low),
        [0x2002, high, low_half, ..] => Some(Ipv4Addr::from(
            (u32::from(high) << 16) | u32::from(low_half),
        )),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        _ => None,
    }
}

/// What kind of non-public address `ip` is, or `None` for a globally routable one.
fn non_global(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            match (a, b) {
                (0, _) => Some("an unspecified address (0.0.0.0/8)"),
                (127, _) => Some("a loopback address"),
                (10, _) | (192, 168) => Some("a private address (RFC 1918)"),
                (172, 16..=31) => Some("a private address (RFC 1918)"),
                (100, 64..=127) => Some("a carrier-grade NAT address (100.64.0.0/10)"),
                (169, 254) => Some("a link-local address (the cloud metadata service lives there)"),
                (224..=239, _) => Some("a multicast address"),
                (240..=255, _) => Some("a reserved or broadcast address"),
                _ => None,
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_unspecified() {
                Some("the unspecified address (::)")
            } else if v6.is_loopback() {
                Some("a loopback address")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a unique local (private) IPv6 address")
            } else if first & 0xffc0 == 0xfe80 {
                Some("a link-local IPv6 address")
            } else if first & 0xff00 == 0xff00 {
                Some("a multicast address")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(guard: &EgressGuard, address: &str) -> bool {
        guard.check("host", address.parse().unwrap()).is_err()
    }

    #[test]
    fn every_non_public_range_is_refused_and_public_addresses_pass() {
        let guard = EgressGuard::default();
        for address in [
            "0.0.0.0",
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::",
            "64:ff9b::a00:1",
        ] {
            assert!(refused(&guard, address), "{address} should be refused");
        }
        for address in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "2002:5db8:d822::1",
            "::ffff:93.184.216.34",
        ] {
            assert!(!refused(&guard, address), "{address} should pass");
        }
    }

    #[test]
    fn the_allow_list_admits_addresses_and_networks_in_either_form() {
        let guard = EgressGuard::new(vec![
            "127.0.0.1".parse().unwrap(),
            "10.20.0.0/16".parse().unwrap(),
        ]);
        assert!(!refused(&guard, "127.0.0.1"));
        assert!(!refused(&guard, "::ffff:127.0.0.1"));
        assert!(refused(&guard, "127.0.0.2"));
        assert!(!refused(&guard, "10.20.30.40"));
        assert!(refused(&guard, "10.21.0.1"));
        assert!(refused(&guard, "::1"));
    }

    #[test]
    fn literal_hosts_are_checked_before_any_connection() {
        let guard = EgressGuard::default();
        for host in ["127.0.0.2", "[::1]", "::1", "[::ffff:127.0.0.1]", "0.0.0.0"] {
            assert!(guard.check_host(host).is_err(), "{host}");
        }
        // Names are judged by what they resolve to, when connecting.
        assert!(guard.check_host("hooks.example.com").is_ok());
        assert!(guard.check_host("localhost").is_ok());
        let error = guard.check_host("169.254.169.254").unwrap_err().to_string();
        assert!(
            error.contains("link-local") && error.contains("allowed_networks"),
            "{error}"
        );
    }

    #[test]
    fn networks_parse_with_and_without_a_prefix_and_refuse_nonsense() {
        assert_eq!(
            "10.0.0.0/8".parse::<Network>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!("::1".parse::<Network>().unwrap().to_string(), "::1/128");
        for bad in ["10.0.0.0/33", "example.com", "10.0.0/8", "::1/129", ""] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
    }
}
