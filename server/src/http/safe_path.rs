//! Turning a request path into a file inside the static directory, and nothing else.
//!
//! The path is taken raw from the request line and decoded here, one `/`-separated segment at a
//! time, so that no layer in between can turn `%2e%2e` or `%2f` into something the file system
//! would interpret. A segment is refused when decoding it could change how the path splits (an
//! encoded `/`, a backslash, NUL) and hidden when it starts with a dot (which covers `.` and
//! `..`). After that the joined path is canonicalized and must still lie inside the (canonical)
//! root: this is what stops symlinks that lead out of the static directory.
//!
//! What this does not stop: someone with write access to the static directory swapping a
//! directory for a symlink between the check and the open. The final open uses `O_NOFOLLOW`,
//! which covers the last component; the threat model is remote clients, not local users.

use std::path::{Component, Path, PathBuf};

use super::error::StaticError;

/// A request path split into decoded, checked segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    /// Non-empty decoded segments; empty ones (`//`) are dropped, so `//etc/passwd` is just
    /// `etc/passwd` under the static directory.
    pub segments: Vec<String>,
    /// Whether the raw path ended with `/`: a directory must be asked for that way (otherwise it
    /// is redirected), and a file must not.
    pub trailing_slash: bool,
}

impl RequestPath {
    /// The path relative to the static directory.
    pub fn relative(&self) -> PathBuf {
        self.segments.iter().collect()
    }

    /// The canonical URL path of this request with a trailing slash, re-encoded from the decoded
    /// segments. Used as a redirect target, so it can never start with `//` (which a browser
    /// would read as another host).
    pub fn with_trailing_slash(&self) -> String {
        let mut url = String::from("/");
        for segment in &self.segments {
            url.extend(percent_encoding::utf8_percent_encode(segment, SEGMENT));
            url.push('/');
        }
        url
    }
}

/// Bytes that must be percent-encoded inside a URL path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Splits and decodes the raw request path (`req.uri().path()`), refusing anything that could
/// name a file outside the static directory or a hidden one.
pub fn parse(raw: &str) -> Result<RequestPath, StaticError> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(StaticError::BadPath("path must start with /"));
    };
    let mut segments = Vec::new();
    for raw_segment in rest.split('/') {
        if raw_segment.is_empty() {
            continue;
        }
        let segment = decode_segment(raw_segment)?;
        if segment.contains('/') {
            return Err(StaticError::BadPath("encoded slash in path"));
        }
        if segment.contains('\\') {
            return Err(StaticError::BadPath("backslash in path"));
        }
        if segment.contains('\0') {
            return Err(StaticError::BadPath("NUL byte in path"));
        }
        if segment.starts_with('.') {
            // `.`, `..` and hidden files alike: nothing to see here.
            return Err(StaticError::NotFound);
        }
        segments.push(segment);
    }
    Ok(RequestPath {
        segments,
        trailing_slash: raw.ends_with('/'),
    })
}

/// Strict percent-decoding: every `%` must start a two-digit hex escape, and the result must be
/// UTF-8. (The `percent-encoding` crate passes malformed escapes through unchanged, which would
/// let `%zz` and the literal text `%zz` name the same file.)
fn decode_segment(raw: &str) -> Result<String, StaticError> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(high), Some(low)) =
                (hex_value(bytes.get(i + 1)), hex_value(bytes.get(i + 2)))
            else {
                return Err(StaticError::BadPath("invalid percent-encoding"));
            };
            decoded.push(high << 4 | low);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| StaticError::BadPath("path is not valid UTF-8"))
}

fn hex_value(byte: Option<&u8>) -> Option<u8> {
    char::from(*byte?).to_digit(16).map(|digit| digit as u8)
}

/// Canonicalizes `root/relative` and checks that it is still inside `root` (itself canonical)
/// and not hidden once symlinks are resolved.
pub fn resolve(root: &Path, relative: &Path) -> Result<PathBuf, StaticError> {
    let canonical = root.join(relative).canonicalize()?;
    let inside = canonical
        .strip_prefix(root)
        .map_err(|_| StaticError::NotFound)?;
    let hidden = inside.components().any(|component| match component {
        Component::Normal(name) => name.as_encoded_bytes().starts_with(b"."),
        _ => true,
    });
    if hidden {
        return Err(StaticError::NotFound);
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(raw: &str) -> Vec<String> {
        parse(raw).unwrap().segments
    }

    fn bad(raw: &str) -> bool {
        matches!(parse(raw), Err(StaticError::BadPath(_)))
    }

    fn hidden(raw: &str) -> bool {
        matches!(parse(raw), Err(StaticError::NotFound))
    }

    #[test]
    fn decodes_segments() {
        assert_eq!(segments("/"), Vec::<String>::new());
        assert_eq!(segments("/a/b.txt"), ["a", "b.txt"]);
        assert_eq!(segments("/a%20b/%C3%A9"), ["a b", "é"]);
        assert_eq!(segments("//etc/passwd"), ["etc", "passwd"]);
        assert!(parse("/a/").unwrap().trailing_slash);
        assert!(!parse("/a").unwrap().trailing_slash);
    }

    #[test]
    fn refuses_dot_segments_in_any_spelling() {
        for raw in [
            "/..",
            "/../etc/passwd",
            "/a/../b",
            "/%2e%2e/x",
            "/.%2e/x",
            "/%2E./x",
            "/./x",
            "/.hidden",
            "/dir/.git/config",
        ] {
            assert!(hidden(raw), "{raw}");
        }
    }

    #[test]
    fn refuses_segments_that_would_split_differently() {
        for raw in [
            "/..%2fetc",
            "/a%2Fb",
            "/a\\b",
            "/a%5cb",
            "/a%00b",
            "/%zz",
            "/%4",
            "/%+1",
            "/%ff",
            "etc/passwd",
        ] {
            assert!(bad(raw), "{raw}");
        }
    }

    #[test]
    fn redirect_target_is_reencoded_and_never_protocol_relative() {
        let path = parse("//evil.example/a%20b").unwrap();
        assert_eq!(path.with_trailing_slash(), "/evil.example/a%20b/");
    }
}
