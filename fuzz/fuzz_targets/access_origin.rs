//! The `Origin` policy of WebSocket handshakes (`--allowed-origins`).
//!
//! Properties: any list and any header are parsed or refused, never a panic. With a list of
//! exact origins only, an allowed `Origin` is byte-equal to one entry once both are normalised
//! (scheme and host lowercased, the scheme's default port written out, an entry's trailing `/`
//! dropped) by a strict reference (the port is decimal digits only); every
//! such entry allows itself; a `*` entry allows anything; and without a list, an allowed origin
//! names exactly the request's `Host` (same normalisation).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::fuzzing::OriginPolicy;

/// `scheme://host:port` normalised, or `None` if `text` is not an origin. A bare `host[:port]`
/// (a non-browser client's) normalises with an empty scheme, `://host:port`.
fn normalise(text: &str) -> Option<String> {
    let (scheme, authority) = match text.split_once("://") {
        Some(("", _)) => return None,
        Some(parts) => parts,
        None => ("", text),
    };
    if authority.contains(['/', '@', '?', '#']) {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let (host, port) = host_port(authority)?;
    let port = port.or(default_port(&scheme));
    Some(match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Host (lowercased) and port, strictly: a port is decimal digits (RFC 3986 `*DIGIT`, so
/// leading zeros are allowed) of a value below 65536.
fn host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']')?;
        let after = &authority[close + 1..];
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':')?)
        };
        (&authority[..=close], port)
    } else {
        match authority.rfind(':') {
            Some(colon) => (&authority[..colon], Some(&authority[colon + 1..])),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(port) => {
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(port.parse::<u16>().ok()?)
        }
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let list = lines.next().unwrap_or_default();
    let origin = lines.next();
    let host = lines.next();

    // Without a list: the request's own host only.
    if OriginPolicy::default().allows(origin, host) {
        if let Some(origin) = origin {
            let normalised = normalise(origin)
                .unwrap_or_else(|| panic!("allowed {origin:?}, which is not an origin"));
            let scheme = &normalised[..normalised.find("://").unwrap()];
            let host = host.expect("allowed without a Host");
            let (host, port) = host_port(host)
                .unwrap_or_else(|| panic!("allowed {origin:?} for Host {host:?}, not a host"));
            let port = port.or(default_port(scheme));
            let expected = match port {
                Some(port) => format!("{scheme}://{host}:{port}"),
                None => format!("{scheme}://{host}"),
            };
            assert_eq!(normalised, expected, "{origin:?} is not Host {host:?}");
        }
    }

    let Ok(policy) = list.parse::<OriginPolicy>() else {
        return;
    };
    let entries: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    if entries.contains(&"*") {
        assert!(policy.allows(origin, host));
        assert!(policy.allows(Some("https://anything.example"), None));
        return;
    }
    if entries.iter().any(|entry| entry.contains('*')) {
        // Patterns: only "no panic" and no Origin header at all being allowed.
        assert!(policy.allows(None, host));
        let _ = policy.allows(origin, host);
        return;
    }
    let normalised_entries: Vec<Option<String>> = entries
        .iter()
        .map(|entry| normalise(entry.trim_end_matches('/')))
        .collect();
    for (entry, normalised) in entries.iter().zip(&normalised_entries) {
        let entry = entry.trim_end_matches('/');
        if normalised.is_some() {
            assert!(
                policy.allows(Some(entry), None),
                "entry {entry:?} does not allow itself"
            );
        }
    }
    if let Some(origin) = origin {
        if policy.allows(Some(origin), host) {
            let normalised = normalise(origin)
                .unwrap_or_else(|| panic!("allowed {origin:?}, which is not an origin"));
            assert!(
                normalised_entries
                    .iter()
                    .any(|entry| entry.as_deref() == Some(normalised.as_str())),
                "allowed {origin:?} ({normalised}), not in {entries:?}"
            );
        }
    }
});
