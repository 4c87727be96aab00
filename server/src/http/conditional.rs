//! RFC 7232 validators (ETag, Last-Modified) and the conditional headers that use them:
//! `If-Match` / `If-Unmodified-Since` (→ 412), `If-None-Match` / `If-Modified-Since` (→ 304) and
//! `If-Range` (RFC 7233 §3.2), evaluated in the order of RFC 9110 §13.2.2.

use std::{
    os::unix::fs::MetadataExt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::http::header::{self, HeaderMap};

/// What identifies one version of a file.
#[derive(Debug, Clone)]
pub struct Validators {
    /// Strong entity-tag, quotes included: `"<hex size>-<hex mtime in ns>"`. Size plus a
    /// nanosecond mtime changes on every write on any file system worth serving from.
    pub etag: String,
    /// The modification time as sent (whole seconds, never before the epoch nor in the future:
    /// RFC 7232 §2.2.1 forbids a Last-Modified later than the response's Date).
    pub last_modified: SystemTime,
    /// Whether `last_modified` is a strong validator (§2.2.2): only when the file was last
    /// changed at least a second before now, so that a second write within the same second
    /// cannot keep the same date. A weak date never satisfies If-Range.
    strong_date: bool,
}

impl Validators {
    pub fn new(metadata: &std::fs::Metadata, now: SystemTime) -> Validators {
        let nanos =
            i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec());
        let etag = format!("\"{:x}-{:x}\"", metadata.len(), nanos);
        let mtime = metadata.modified().unwrap_or(UNIX_EPOCH);
        let last_modified = whole_seconds(mtime.clamp(UNIX_EPOCH, now));
        let strong_date = mtime + Duration::from_secs(1) <= now;
        Validators {
            etag,
            last_modified,
            strong_date,
        }
    }

    /// The `Last-Modified` header value.
    pub fn last_modified_header(&self) -> String {
        httpdate::fmt_http_date(self.last_modified)
    }
}

/// Whether a request must be answered 412 Precondition Failed (RFC 9110 §13.2.2, steps 1 and 2):
/// If-Match decides when present (strong comparison; `*` matches any existing file); otherwise
/// If-Unmodified-Since, ignored when it is not a valid HTTP-date. Evaluated before the 304 rules.
pub fn precondition_failed(headers: &HeaderMap, validators: &Validators) -> bool {
    let mut if_match = headers.get_all(header::IF_MATCH).peekable();
    if if_match.peek().is_some() {
        let matched = if_match.any(|value| {
            value.to_str().is_ok_and(|list| {
                list.trim() == "*" || entity_tags(list).any(|tag| tag == validators.etag)
            })
        });
        return !matched;
    }
    match single_date(headers, &header::IF_UNMODIFIED_SINCE) {
        Some(since) => validators.last_modified > since,
        None => false,
    }
}

/// Whether a GET or HEAD should be answered 304 Not Modified (RFC 7232 §6, steps 3 and 4):
/// If-None-Match decides when present (weak comparison, `*` matches any existing file);
/// otherwise If-Modified-Since, ignored when it is not a valid HTTP-date.
pub fn not_modified(headers: &HeaderMap, validators: &Validators) -> bool {
    let mut if_none_match = headers.get_all(header::IF_NONE_MATCH).peekable();
    if if_none_match.peek().is_some() {
        return if_none_match.any(|value| {
            value.to_str().is_ok_and(|list| {
                list.trim() == "*"
                    || entity_tags(list).any(|tag| opaque(tag) == opaque(&validators.etag))
            })
        });
    }
    match single_date(headers, &header::IF_MODIFIED_SINCE) {
        Some(since) => validators.last_modified <= since,
        None => false,
    }
}

/// Whether a Range header may be honoured given If-Range (RFC 7233 §3.2): yes when there is no
/// If-Range, or when it names the current version by a strong comparison of entity-tags or by
/// an exact, strong Last-Modified date. Anything else (a stale tag, a weak tag, another date,
/// garbage) means "send the whole file".
pub fn range_allowed(headers: &HeaderMap, validators: &Validators) -> bool {
    let mut values = headers.get_all(header::IF_RANGE);
    let (Some(value), None) = (values.next(), values.next()) else {
        return headers.get(header::IF_RANGE).is_none();
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        // A weak tag never matches strongly; ours is always strong.
        return value == validators.etag;
    }
    match httpdate::parse_http_date(value) {
        Ok(date) => validators.strong_date && date == validators.last_modified,
        Err(_) => false,
    }
}

/// The value of a header that must appear once and hold an HTTP-date; `None` otherwise.
fn single_date(headers: &HeaderMap, name: &header::HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name);
    match (values.next(), values.next()) {
        (Some(value), None) => httpdate::parse_http_date(value.to_str().ok()?.trim()).ok(),
        _ => None,
    }
}

/// The entity-tags of a comma-separated list (`"a", W/"b"`), each with its `W/` prefix if any.
/// Parsing stops at the first malformed element: what came before still counts.
fn entity_tags(list: &str) -> impl Iterator<Item = &str> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let start_len = rest.len();
        let after_weak = rest.strip_prefix("W/").unwrap_or(rest);
        let quoted = after_weak.strip_prefix('"')?;
        let close = quoted.find('"')?;
        let tag_len = start_len - quoted.len() + close + 1;
        let (tag, tail) = rest.split_at(tag_len);
        rest = tail;
        Some(tag)
    })
}

/// The opaque part of an entity-tag, for weak comparison (`W/"x"` and `"x"` are equal).
fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

fn whole_seconds(time: SystemTime) -> SystemTime {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn validators() -> Validators {
        Validators {
            etag: "\"a-b\"".into(),
            last_modified: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            strong_date: true,
        }
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn entity_tag_lists() {
        let tags: Vec<&str> = entity_tags(r#" "x", W/"y",,"a,b" "#).collect();
        assert_eq!(tags, [r#""x""#, r#"W/"y""#, r#""a,b""#]);
        let tags: Vec<&str> = entity_tags(r#""x", junk, "y""#).collect();
        assert_eq!(tags, [r#""x""#]);
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let v = validators();
        let inm = header::IF_NONE_MATCH;
        assert!(not_modified(&headers(&[(inm.clone(), r#""a-b""#)]), &v));
        assert!(not_modified(&headers(&[(inm.clone(), r#"W/"a-b""#)]), &v));
        assert!(not_modified(
            &headers(&[(inm.clone(), r#""z", "a-b""#)]),
            &v
        ));
        assert!(not_modified(&headers(&[(inm.clone(), "*")]), &v));
        assert!(!not_modified(&headers(&[(inm.clone(), r#""a-c""#)]), &v));
        // If-None-Match present and not matching: If-Modified-Since is not consulted.
        let ims = header::IF_MODIFIED_SINCE;
        let late = "Thu, 01 Jan 2037 00:00:00 GMT";
        assert!(!not_modified(
            &headers(&[(inm, r#""old""#), (ims.clone(), late)]),
            &v
        ));
        assert!(not_modified(&headers(&[(ims, late)]), &v));
    }

    #[test]
    fn if_match_uses_strong_comparison_and_decides_before_the_date() {
        let v = validators();
        let im = header::IF_MATCH;
        assert!(!precondition_failed(
            &headers(&[(im.clone(), r#""a-b""#)]),
            &v
        ));
        assert!(!precondition_failed(
            &headers(&[(im.clone(), r#""z", "a-b""#)]),
            &v
        ));
        assert!(!precondition_failed(&headers(&[(im.clone(), "*")]), &v));
        assert!(precondition_failed(
            &headers(&[(im.clone(), r#"W/"a-b""#)]),
            &v
        ));
        assert!(precondition_failed(
            &headers(&[(im.clone(), r#""old""#)]),
            &v
        ));
        assert!(precondition_failed(
            &headers(&[(im.clone(), "garbage")]),
            &v
        ));
        // If-Match present and matching: If-Unmodified-Since is not consulted.
        let ius = header::IF_UNMODIFIED_SINCE;
        let early = "Thu, 01 Jan 1970 00:00:01 GMT";
        assert!(!precondition_failed(
            &headers(&[(im, r#""a-b""#), (ius.clone(), early)]),
            &v
        ));
        assert!(precondition_failed(&headers(&[(ius, early)]), &v));
    }

    #[test]
    fn if_unmodified_since() {
        let v = validators();
        let ius = header::IF_UNMODIFIED_SINCE;
        let exact = v.last_modified_header();
        assert!(!precondition_failed(&headers(&[(ius.clone(), &exact)]), &v));
        let earlier = httpdate::fmt_http_date(v.last_modified - Duration::from_secs(1));
        assert!(precondition_failed(
            &headers(&[(ius.clone(), &earlier)]),
            &v
        ));
        // Not a date: ignored.
        assert!(!precondition_failed(&headers(&[(ius, "yesterday")]), &v));
        assert!(!precondition_failed(&HeaderMap::new(), &v));
    }

    #[test]
    fn if_modified_since() {
        let v = validators();
        let ims = header::IF_MODIFIED_SINCE;
        let exact = v.last_modified_header();
        assert!(not_modified(&headers(&[(ims.clone(), &exact)]), &v));
        let earlier = httpdate::fmt_http_date(v.last_modified - Duration::from_secs(1));
        assert!(!not_modified(&headers(&[(ims.clone(), &earlier)]), &v));
        assert!(!not_modified(&headers(&[(ims, "yesterday")]), &v));
    }

    #[test]
    fn if_range() {
        let v = validators();
        let ir = header::IF_RANGE;
        assert!(range_allowed(&HeaderMap::new(), &v));
        assert!(range_allowed(&headers(&[(ir.clone(), r#""a-b""#)]), &v));
        assert!(!range_allowed(&headers(&[(ir.clone(), r#"W/"a-b""#)]), &v));
        assert!(!range_allowed(&headers(&[(ir.clone(), r#""old""#)]), &v));
        let exact = v.last_modified_header();
        assert!(range_allowed(&headers(&[(ir.clone(), &exact)]), &v));
        let weak = Validators {
            strong_date: false,
            ..validators()
        };
        assert!(!range_allowed(&headers(&[(ir.clone(), &exact)]), &weak));
        let other = httpdate::fmt_http_date(v.last_modified + Duration::from_secs(1));
        assert!(!range_allowed(&headers(&[(ir.clone(), &other)]), &v));
        assert!(!range_allowed(&headers(&[(ir, "garbage")]), &v));
    }

    #[test]
    fn last_modified_never_panics_on_odd_mtimes() {
        let future = SystemTime::now() + Duration::from_secs(86_400 * 365 * 9000);
        let now = SystemTime::now();
        assert!(whole_seconds(future.clamp(UNIX_EPOCH, now)) <= now);
        let before_epoch = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(
            whole_seconds(before_epoch.clamp(UNIX_EPOCH, now)),
            UNIX_EPOCH
        );
    }
}
