//! Address rules (the SSRF guard), applied after DNS resolution so a public name pointing at a
//! private address (DNS rebinding, `localhost.example.com`) is refused as surely as a literal one.
//!
//! The rules are the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and its
//! updates): every block whose "Globally Reachable" column is `False` is refused, as are
//! multicast, site-local (`fec0::/10`, deprecated by RFC 3879) and the deprecated 6to4 relay
//! anycast block. Addresses that embed an IPv4 address are judged by what they embed:
//! IPv4-compatible (`::/96`, RFC 4291), NAT64 (`64:ff9b::/96`, RFC 6052), 6to4 (`2002::/16`,
//! RFC 3056) and Teredo (`2001::/32`, RFC 4380: server and client). IPv4-mapped addresses
//! (`::ffff:0:0/96`) are refused outright, as DESIGN.md §5 asks, and so is the local-use NAT64
//! prefix `64:ff9b:1::/48` (RFC 8215), whose embedding is site-specific.
//!
//! Two doors, one rule: [`PublicOnlyResolver`] filters what DNS returns, and
//! [`refuses_literal`] covers URLs whose host is an IP literal (no DNS lookup happens for them;
//! `http://2130706433/` and `http://[::ffff:127.0.0.1]/` are literals after URL parsing).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// IPv4 blocks that are not globally reachable (IANA IPv4 Special-Purpose Address Registry),
/// plus multicast and the deprecated 6to4 relay anycast block.
const V4_REFUSED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private use"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private use"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "6to4 relay anycast (deprecated)"),
    ("192.168.0.0/16", "private use"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (and limited broadcast)"),
];

/// Exceptions inside refused IPv4 blocks that the registry marks globally reachable.
const V4_GLOBAL_EXCEPTIONS: &[&str] = &[
    "192.0.0.9/32",  // Port Control Protocol anycast
    "192.0.0.10/32", // Traversal Using Relays around NAT anycast
];

/// IPv6 blocks that are not globally reachable (IANA IPv6 Special-Purpose Address Registry),
/// plus multicast and deprecated site-local. The blocks that embed IPv4 are handled apart.
const V6_REFUSED: &[(&str, &str)] = &[
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy IPv6 prefix"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing SIDs"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
];

/// Exceptions inside `2001::/23` that the registry marks globally reachable.
const V6_GLOBAL_EXCEPTIONS: &[&str] = &[
    "2001:1::1/128",   // Port Control Protocol anycast
    "2001:1::2/128",   // TURN anycast
    "2001:1::3/128",   // DNS-SD service registration protocol anycast
    "2001:3::/32",     // AMT
    "2001:4:112::/48", // AS112-v6
    "2001:20::/28",    // ORCHIDv2
    "2001:30::/28",    // DRIP entity tags
];

fn v4_nets(table: &'static [(&'static str, &'static str)]) -> impl Iterator<Item = Ipv4Net> {
    table.iter().filter_map(|(net, _)| net.parse().ok())
}

fn v6_nets(table: &'static [(&'static str, &'static str)]) -> impl Iterator<Item = Ipv6Net> {
    table.iter().filter_map(|(net, _)| net.parse().ok())
}

/// Whether an address is on the public internet, by the rules in the module docs.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    if V4_GLOBAL_EXCEPTIONS
        .iter()
        .filter_map(|n| n.parse::<Ipv4Net>().ok())
        .any(|n| n.contains(&ip))
    {
        return true;
    }
    !v4_nets(V4_REFUSED).any(|n| n.contains(&ip))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let embedded = embedded_v4(ip);
    if !embedded.is_empty() {
        return embedded.into_iter().all(is_public_v4);
    }
    if V6_GLOBAL_EXCEPTIONS
        .iter()
        .filter_map(|n| n.parse::<Ipv6Net>().ok())
        .any(|n| n.contains(&ip))
    {
        return true;
    }
    !v6_nets(V6_REFUSED).any(|n| n.contains(&ip))
}

/// The IPv4 addresses an IPv6 address carries where the packet really goes: IPv4-compatible
/// (`::a.b.c.d`, except `::` and `::1`), NAT64 well-known prefix, 6to4, Teredo (server and
/// client, the client obfuscated by XOR). Empty for every other address.
fn embedded_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let seg = ip.segments();
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from(bits as u32);
    let compatible = seg[..6] == [0; 6] && bits > 1;
    let nat64 = seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if compatible || nat64 {
        return vec![low32];
    }
    if seg[0] == 0x2002 {
        return vec![Ipv4Addr::from((bits >> 80) as u32)];
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        let server = Ipv4Addr::from((bits >> 64) as u32);
        let client = Ipv4Addr::from(!(bits as u32));
        return vec![server, client];
    }
    Vec::new()
}

/// Whether `url`'s host is an IP literal that the rules refuse. Names are judged by
/// [`PublicOnlyResolver`] when they are resolved; literals never reach a resolver.
pub fn refuses_literal(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => !is_public(ip.into()),
        Some(Host::Ipv6(ip)) => !is_public(ip.into()),
        Some(Host::Domain(_)) | None => false,
    }
}

/// DNS resolver that drops non-public addresses and fails when none is left.
#[derive(Debug, Default, Clone, Copy)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(BlockedAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The resolved addresses were all refused by the rules.
#[derive(Debug, thiserror::Error)]
#[error("host resolves only to non-public addresses")]
pub struct BlockedAddress;

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().expect("ip"))
    }

    #[test]
    fn every_table_entry_parses() {
        assert_eq!(v4_nets(V4_REFUSED).count(), V4_REFUSED.len());
        assert_eq!(v6_nets(V6_REFUSED).count(), V6_REFUSED.len());
        for n in V4_GLOBAL_EXCEPTIONS {
            n.parse::<Ipv4Net>().expect(n);
        }
        for n in V6_GLOBAL_EXCEPTIONS {
            n.parse::<Ipv6Net>().expect(n);
        }
    }

    #[test]
    fn special_purpose_addresses_are_refused() {
        for ip in [
            // IPv4 registry
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            // IPv6 registry
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b:1::a00:1",
            "64:ff9b:1::808:808",
            "100::1",
            "100::ffff:ffff:ffff:ffff",
            "2001:2::1",
            "2001:10::1",
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
        ] {
            assert!(!public(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn addresses_that_embed_ipv4_are_judged_by_what_they_embed() {
        let cases = [
            // IPv4-compatible ::/96
            ("::7f00:1", false),
            ("::a00:1", false),
            ("::808:808", true),
            // NAT64 well-known prefix
            ("64:ff9b::7f00:1", false),
            ("64:ff9b::a9fe:a9fe", false),
            ("64:ff9b::808:808", true),
            // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD
            ("2002:7f00:1::1", false),
            ("2002:c0a8:101::1", false),
            ("2002:808:808::1", true),
            // Teredo: server in bits 32..64, client XOR-ed in the last 32 bits
            ("2001:0:808:808::80ff:fffe", false), // client 127.0.0.1
            ("2001:0:a00:1::f7f7:f7f7", false),   // server 10.0.0.1
            ("2001:0:808:808::f7f7:f7f7", true),  // server 8.8.8.8, client 8.8.8.8
        ];
        for (ip, expected) in cases {
            assert_eq!(public(ip), expected, "{ip}");
        }
    }

    #[test]
    fn globally_reachable_exceptions_and_public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "13.107.42.16",
            "100.128.0.1",
            "100.63.255.255",
            "172.32.0.1",
            "192.0.0.9",
            "192.0.0.10",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "2001:4:112::1",
            "2001:3::1",
            "2001:20::1",
        ] {
            assert!(public(ip), "{ip} must pass");
        }
    }

    #[test]
    fn literal_hosts_in_every_spelling_are_judged() {
        for (url, refused) in [
            ("http://127.0.0.1:8080/x", true),
            ("http://2130706433:8080/x", true),
            ("http://0x7f.1/x", true),
            ("http://017700000001/x", true),
            ("http://[::ffff:127.0.0.1]:80/x", true),
            ("http://[::ffff:7f00:1]/x", true),
            ("http://[64:ff9b::7f00:1]/x", true),
            ("http://0/x", true),
            ("http://8.8.8.8/x", false),
            ("http://example.com/x", false),
        ] {
            let parsed = Url::parse(url).expect(url);
            assert_eq!(refuses_literal(&parsed), refused, "{url}");
        }
    }
}
