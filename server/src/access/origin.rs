//! `--allowed-origins`: which web pages may open a WebSocket here. A browser sends the page's
//! origin with every WebSocket handshake, and the server is the only one that can refuse it
//! (the same-origin policy does not apply to WebSockets), so without this check any site a user
//! visits could talk to the server as that user (cross-site WebSocket hijacking).

use std::str::FromStr;

/// The allowed origins: the `--allowed-origins` list, or (unset) the request's own host.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// `None`: only the origin naming the request's own `Host`.
    rules: Option<Vec<OriginRule>>,
}

/// One entry of `--allowed-origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginRule {
    /// `*`
    Any,
    /// `https://chat.example.com[:port]`
    Exact(Origin),
    /// `*.example.com` or `https://*.example.com`: hosts ending in `.example.com`, any port.
    Subdomains {
        scheme: Option<String>,
        suffix: String,
    },
}

/// A parsed origin: scheme and host lowercased, the port filled in from the scheme when left
/// out (so `https://a.example` and `https://a.example:443` are one origin).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl OriginPolicy {
    /// Whether a handshake with this `Origin` header (and this `Host` header) may proceed.
    /// No `Origin` at all: not a browser, allowed (browsers always send one).
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        match &self.rules {
            Some(rules) if rules.contains(&OriginRule::Any) => true,
            Some(rules) => Origin::parse(origin)
                .is_some_and(|origin| rules.iter().any(|rule| rule.matches(&origin))),
            None => match (Origin::parse(origin), host) {
                (Some(origin), Some(host)) => origin.is_host(host),
                _ => false,
            },
        }
    }
}

impl FromStr for OriginPolicy {
    type Err = String;

    /// A comma-separated list of origins, `*.domain` patterns or `*`.
    fn from_str(text: &str) -> Result<OriginPolicy, String> {
        let rules = text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(OriginRule::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() {
            return Err("the list of allowed origins is empty".to_owned());
        }
        Ok(OriginPolicy { rules: Some(rules) })
    }
}

impl OriginRule {
    fn parse(entry: &str) -> Result<OriginRule, String> {
        if entry == "*" {
            return Ok(OriginRule::Any);
        }
        let (scheme, rest) = match entry.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, entry),
        };
        if let Some(domain) = rest.strip_prefix("*.") {
            let domain = domain.trim_end_matches('/');
            if domain.is_empty() || domain.contains(['/', ':', '*']) {
                return Err(format!("`{entry}` is not a pattern like *.example.com"));
            }
            return Ok(OriginRule::Subdomains {
                scheme,
                suffix: format!(".{}", domain.to_ascii_lowercase()),
            });
        }
        Origin::parse(entry.trim_end_matches('/'))
            .filter(|_| scheme.is_some())
            .map(OriginRule::Exact)
            .ok_or_else(|| {
                format!("`{entry}` is not an origin like https://chat.example.com, a pattern like *.example.com, or *")
            })
    }

    fn matches(&self, origin: &Origin) -> bool {
        match self {
            OriginRule::Any => true,
            OriginRule::Exact(allowed) => allowed == origin,
            OriginRule::Subdomains { scheme, suffix } => {
                scheme
                    .as_ref()
                    .is_none_or(|scheme| *scheme == origin.scheme)
                    && origin.host.ends_with(suffix.as_str())
            }
        }
    }
}

impl Origin {
    /// `scheme://host[:port]`, as browsers send it (no path, no user info); or a bare
    /// `host[:port]`, as some non-browser clients send (Tsung sends its `Host`), which has no
    /// scheme and so matches only by host.
    fn parse(text: &str) -> Option<Origin> {
        let (scheme, authority) = match text.split_once("://") {
            Some(("", _)) => return None,
            Some(parts) => parts,
            None => ("", text),
        };
        if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        let (host, port) = split_host_port(authority)?;
        let port = port.or_else(|| default_port(&scheme));
        Some(Origin { scheme, host, port })
    }

    /// Whether this origin names the same host and port as a `Host` header (whose port, when
    /// left out, is the default of the origin's scheme).
    fn is_host(&self, host_header: &str) -> bool {
        match split_host_port(host_header) {
            Some((host, port)) => {
                host == self.host && port.or_else(|| default_port(&self.scheme)) == self.port
            }
            None => false,
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the host lowercased.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (format!("[{host}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        // Digits only (RFC 3986 `port = *DIGIT`): `parse` alone would also take `+443`.
        Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => Some(port.parse::<u16>().ok()?),
        Some(_) => return None,
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> OriginPolicy {
        text.parse().unwrap()
    }

    #[test]
    fn by_default_only_the_requests_own_host() {
        let policy = OriginPolicy::default();
        assert!(policy.allows(Some("http://127.0.0.1:7681"), Some("127.0.0.1:7681")));
        assert!(policy.allows(Some("http://127.0.0.1"), Some("127.0.0.1")));
        assert!(policy.allows(Some("http://127.0.0.1"), Some("127.0.0.1:80")));
        assert!(policy.allows(Some("https://Chat.Example.com"), Some("chat.example.com")));
        assert!(policy.allows(Some("http://[::1]:8080"), Some("[::1]:8080")));
        assert!(!policy.allows(Some("http://127.0.0.1:7681"), Some("127.0.0.1:7682")));
        assert!(!policy.allows(Some("http://localhost:7681"), Some("127.0.0.1:7681")));
        assert!(!policy.allows(Some("https://evil.example"), Some("127.0.0.1:7681")));
        assert!(!policy.allows(
            Some("https://chat.example.com"),
            Some("chat.example.com:80")
        ));
        assert!(!policy.allows(Some("null"), Some("127.0.0.1")));
        assert!(!policy.allows(Some("http://127.0.0.1"), None));
        assert!(policy.allows(None, Some("127.0.0.1")));
        // Non-browser clients that send their own host without a scheme.
        assert!(policy.allows(Some("127.0.0.1:7681"), Some("127.0.0.1:7681")));
        assert!(policy.allows(Some("switchboard"), Some("switchboard")));
        assert!(!policy.allows(Some("127.0.0.1:7682"), Some("127.0.0.1:7681")));
        assert!(!policy.allows(Some(""), Some("127.0.0.1")));
        assert!(!policy.allows(Some("://127.0.0.1"), Some("127.0.0.1")));
    }

    #[test]
    fn a_list_names_origins_and_subdomains() {
        let policy = list("https://chat.example.com, *.example.org, http://*.test");
        assert!(policy.allows(Some("https://chat.example.com"), None));
        assert!(policy.allows(Some("https://chat.example.com:443"), None));
        assert!(!policy.allows(Some("http://chat.example.com"), None));
        assert!(!policy.allows(Some("https://chat.example.com:8443"), None));
        assert!(policy.allows(Some("https://a.example.org"), None));
        assert!(policy.allows(Some("http://a.b.example.org:9000"), None));
        assert!(policy.allows(Some("http://a.test:8080"), None));
        assert!(!policy.allows(Some("https://a.test"), None));
        assert!(!policy.allows(Some("https://example.org"), None));
        assert!(!policy.allows(Some("https://evilexample.org"), None));
        assert!(!policy.allows(Some("null"), None));
        assert!(policy.allows(None, None));
    }

    #[test]
    fn a_star_allows_everything() {
        assert!(list("*").allows(Some("null"), None));
        assert!(list("*").allows(Some("https://anywhere.example"), None));
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!("".parse::<OriginPolicy>().is_err());
        assert!("chat.example.com".parse::<OriginPolicy>().is_err());
        assert!("https://chat.example.com/path"
            .parse::<OriginPolicy>()
            .is_err());
        assert!("https://host:99999".parse::<OriginPolicy>().is_err());
        assert!("*.".parse::<OriginPolicy>().is_err());
        // Found by the access_origin fuzz target: a port with a sign was read as a number.
        assert!("https://host:+443".parse::<OriginPolicy>().is_err());
        assert!(!list("https://host").allows(Some("https://host:+443"), None));
        assert!(list("https://host").allows(Some("https://host:0443"), None));
    }
}
