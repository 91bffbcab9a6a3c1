//! Host patterns of the allow-list: a plain value type at the bottom of the crate, so the
//! settings deserialize into it and the upstream layer matches with it, without either
//! importing the other.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::{Host, Url};

/// `host`, `host:port` or `*.domain` (subdomains only, not the apex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.host)?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl HostPattern {
    /// Parse one pattern.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim().to_ascii_lowercase();
        let bad = || format!("`{raw}` is not a host, host:port or *.domain");
        if raw.is_empty()
            || raw.contains('/')
            || raw.contains('@')
            || raw.chars().skip(1).any(|c| c == '*')
        {
            return Err(bad());
        }
        let (wildcard, rest) = match raw.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, raw.as_str()),
        };
        // Reuse the URL parser for host syntax, IDNA and IPv6 brackets.
        let url = Url::parse(&format!("http://{rest}/")).map_err(|_| bad())?;
        let host = match url.host() {
            Some(Host::Domain(d)) => d.to_owned(),
            Some(Host::Ipv4(ip)) if !wildcard => ip.to_string(),
            Some(Host::Ipv6(ip)) if !wildcard => format!("[{ip}]"),
            _ => return Err(bad()),
        };
        if wildcard && !host.contains('.') {
            return Err(format!("`{raw}`: a wildcard needs a domain with a dot"));
        }
        let port = if rest.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']')) {
            Some(url.port().unwrap_or(80))
        } else {
            None
        };
        Ok(Self {
            host,
            wildcard,
            port,
        })
    }

    /// Whether `url` is on a host (and port) this pattern covers. Without a port in the pattern,
    /// only the scheme's default port matches.
    pub fn matches(&self, url: &Url) -> bool {
        let Some(host) = url.host() else {
            return false;
        };
        let host = match host {
            Host::Domain(d) => d.trim_end_matches('.').to_owned(),
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => format!("[{ip}]"),
        };
        let host_ok = if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        };
        let port_ok = match self.port {
            Some(port) => url.port_or_known_default() == Some(port),
            None => url.port().is_none(),
        };
        host_ok && port_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, url: &str) -> bool {
        HostPattern::parse(pattern)
            .expect("pattern")
            .matches(&Url::parse(url).expect("url"))
    }

    #[test]
    fn exact_hosts_match_only_themselves_on_the_default_port() {
        assert!(m("dev.azure.com", "https://dev.azure.com/org/_apis/x"));
        assert!(m("DEV.azure.com", "https://dev.AZURE.com/x"));
        assert!(!m("dev.azure.com", "https://dev.azure.com.evil.io/x"));
        assert!(!m("dev.azure.com", "https://evildev.azure.com/x"));
        assert!(!m("dev.azure.com", "https://dev.azure.com:8443/x"));
    }

    #[test]
    fn wildcards_cover_subdomains_not_the_apex() {
        assert!(m("*.visualstudio.com", "https://org.visualstudio.com/x"));
        assert!(m("*.visualstudio.com", "https://a.b.visualstudio.com/x"));
        assert!(!m("*.visualstudio.com", "https://visualstudio.com/x"));
        assert!(!m("*.visualstudio.com", "https://evilvisualstudio.com/x"));
    }

    #[test]
    fn ports_must_match_when_given() {
        assert!(m("127.0.0.1:8081", "http://127.0.0.1:8081/a.png"));
        assert!(!m("127.0.0.1:8081", "http://127.0.0.1:8082/a.png"));
        assert!(!m("127.0.0.1", "http://127.0.0.1:8082/a.png"));
        assert!(m("[::1]:9000", "http://[::1]:9000/a.png"));
    }

    #[test]
    fn nonsense_patterns_are_refused() {
        for bad in ["", "*.com", "http://x/", "a/b", "user@host", "*.*.x.com"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
