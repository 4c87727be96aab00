//! `switchboard probe URL [--timeout DURATION]`: one HTTP/1.1 GET, for health checks where the
//! binary is the only program (the container image has no shell and no curl).
//!
//! Exit status 0 when the answer is 2xx (the status line goes to standard output), 1 otherwise
//! with a one-line reason on standard error, 2 for bad arguments. The whole exchange (name
//! lookup aside), connecting included, must finish within the timeout (default 3 s).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use crate::units::parse_duration;

const USAGE: &str = "usage: switchboard probe http://HOST:PORT/PATH [--timeout DURATION]";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The status line must be within this many bytes.
const MAX_STATUS_LINE: usize = 1024;

/// Runs the probe with the arguments after `probe` and returns the exit status.
pub fn run(args: &[String]) -> i32 {
    let (url, timeout) = match parse_args(args).and_then(|(url, timeout)| {
        split_url(&url)?;
        Ok((url, timeout))
    }) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("switchboard probe: {message}\n{USAGE}");
            return 2;
        }
    };
    match get(&url, timeout) {
        Ok((code, status_line)) if (200..300).contains(&code) => {
            println!("{status_line}");
            0
        }
        Ok((_, status_line)) => {
            eprintln!("switchboard probe: {url}: {status_line}");
            1
        }
        Err(reason) => {
            eprintln!("switchboard probe: {url}: {reason}");
            1
        }
    }
}

fn parse_args(args: &[String]) -> Result<(String, Duration), String> {
    let mut url = None;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let value = if arg == "--timeout" {
            Some(rest.next().ok_or("--timeout needs a value")?.as_str())
        } else {
            arg.strip_prefix("--timeout=")
        };
        if let Some(value) = value {
            timeout = parse_duration(value).map_err(|err| format!("--timeout: {err}"))?;
            if timeout.is_zero() {
                return Err("--timeout must be more than 0".into());
            }
        } else if url.is_none() && !arg.starts_with('-') {
            url = Some(arg.clone());
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        }
    }
    Ok((url.ok_or("no URL given")?, timeout))
}

/// `http://authority/path` → (authority with a port, path).
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) if rest[at..].starts_with('/') => (&rest[..at], rest[at..].to_string()),
        Some(at) => (&rest[..at], format!("/{}", &rest[at..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("the URL needs a host (and no user info)".into());
    }
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("the path has spaces or control characters".into());
    }
    let has_port = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].contains(':'),
        None => authority.contains(':'),
    };
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path))
}

/// One GET; returns the status code and the status line.
fn get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let (authority, path) = split_url(url)?;
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| format!("no answer within {}", humantime::format_duration(timeout)))
    };
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {authority}: {err}"))?
        .collect();
    let mut last_error = format!("{authority} resolves to no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining()?) {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(err) => last_error = format!("cannot connect to {addr}: {err}"),
        }
    }
    let mut stream = stream.ok_or(last_error)?;
    let host = authority.strip_suffix(":80").unwrap_or(&authority);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: switchboard-probe\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(remaining()?))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|err| format!("cannot send the request: {err}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    let line_end = loop {
        if let Some(at) = head.windows(2).position(|pair| pair == b"\r\n") {
            break at;
        }
        if head.len() > MAX_STATUS_LINE {
            return Err("the status line is too long".into());
        }
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(|err| err.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => return Err("the connection closed before a status line".into()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                remaining()?;
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("cannot read the answer: {err}")),
        }
    };
    let status_line = String::from_utf8_lossy(&head[..line_end]).into_owned();
    parse_status_line(&status_line)
        .map(|code| (code, status_line.clone()))
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))
}

fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_into_authority_and_path() {
        let split = |url| split_url(url).unwrap();
        assert_eq!(
            split("http://127.0.0.1:7681/readyz"),
            ("127.0.0.1:7681".into(), "/readyz".into())
        );
        assert_eq!(split("http://example"), ("example:80".into(), "/".into()));
        assert_eq!(
            split("http://[::1]/x?y"),
            ("[::1]:80".into(), "/x?y".into())
        );
        assert_eq!(split("http://[::1]:9?q"), ("[::1]:9".into(), "/?q".into()));
        assert!(split_url("https://example/").is_err());
        assert!(split_url("http:///path").is_err());
        assert!(split_url("http://a/b c").is_err());
    }

    #[test]
    fn status_lines_give_their_code() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status_line("HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line("HTTP/1.1 2000 OK"), None);
    }
}
