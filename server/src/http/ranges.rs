//! RFC 7233 byte ranges: parse `Range: bytes=…`, clamp to the file, coalesce, and decide.
//!
//! Policy, in the order it is applied:
//! - A header that is not a well-formed `bytes=` range set (another unit, garbage, `a-b` with
//!   a > b, an empty set) is ignored as §3.1 requires: the whole file is served with 200.
//! - Ranges starting at or after the end of the file are dropped; a last position past the end
//!   is clamped to it. If nothing remains (including every range of an empty file), the request
//!   is unsatisfiable: 416.
//! - Overlapping and adjacent ranges are coalesced (§6.1), so a list such as `0-,0-,0-` cannot
//!   make the response larger than the file. Parts keep the order in which their first range
//!   appeared in the header (§4.1 asks for the request's order), so `bytes=500-599,0-99` is
//!   answered with the bytes at 500 first.
//! - An abusive list is refused by serving the whole file with 200, which is what nginx
//!   (`max_ranges`) and Apache (`MaxRanges`) do and what §6.1 allows: more than
//!   [`MAX_RANGE_SPECS`] ranges in the header, more than [`MAX_PARTS`] parts after coalescing,
//!   or parts so small that the multipart response would be larger than the file itself.
//!   The last check needs the multipart framing size and lives with the caller, see
//!   [`super::byteranges`].

/// At most this many parts in one multipart/byteranges response after coalescing.
pub const MAX_PARTS: usize = 64;

/// At most this many byte-range-specs are even looked at; a longer list is refused before any
/// coalescing work is done.
pub const MAX_RANGE_SPECS: usize = 1024;

/// A satisfiable range of a file: bytes `start..end` (end exclusive, never empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// The first byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl ByteRange {
    // Never empty (see above), so no `is_empty`.
    #[allow(clippy::len_without_is_empty)]
    /// The range's length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// The `Content-Range` value for this range of a file of `total` bytes.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end - 1, total)
    }
}

/// What to answer for a request's Range header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangePlan {
    /// Serve the whole file with 200 (no header, a malformed one, or a refused one).
    Whole,
    /// Serve these coalesced ranges with 206; one range is a plain 206, more are multipart.
    Parts(Vec<ByteRange>),
    /// Answer 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// One byte-range-spec as written in the header, before it meets the file's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-last` or `first-`.
    From { first: u64, last: Option<u64> },
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// Why a header yields no ranges to work with.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Malformed,
    TooManySpecs,
}

/// Decides how to answer `Range: header` for a file of `len` bytes.
pub fn plan(header: &str, len: u64) -> RangePlan {
    let specs = match parse(header) {
        Ok(specs) => specs,
        Err(refusal) => {
            log::debug!("ignoring Range header ({refusal:?}): {header:.80}");
            return RangePlan::Whole;
        }
    };
    let ranges: Vec<ByteRange> = specs.iter().filter_map(|spec| clamp(*spec, len)).collect();
    if ranges.is_empty() {
        return RangePlan::Unsatisfiable;
    }
    let parts = coalesce(ranges);
    if parts.len() > MAX_PARTS {
        log::debug!("refusing {} range parts (max {MAX_PARTS})", parts.len());
        return RangePlan::Whole;
    }
    RangePlan::Parts(parts)
}

/// Parses `bytes=spec, spec, …` (unit case-insensitive, optional whitespace and empty elements
/// around commas as the list syntax of RFC 7230 §7 allows).
fn parse(header: &str) -> Result<Vec<Spec>, Refusal> {
    let (unit, set) = header.split_once('=').ok_or(Refusal::Malformed)?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return Err(Refusal::Malformed);
    }
    let mut specs = Vec::new();
    for element in set.split(',') {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() {
            continue;
        }
        if specs.len() == MAX_RANGE_SPECS {
            return Err(Refusal::TooManySpecs);
        }
        let (first, last) = element.split_once('-').ok_or(Refusal::Malformed)?;
        let spec = if first.is_empty() {
            Spec::Suffix(number(last)?)
        } else {
            // Compared as written, not as saturated numbers: `last < first` makes the header
            // invalid however large both are.
            if !last.is_empty() && digits_less(last, first) {
                return Err(Refusal::Malformed);
            }
            let first = number(first)?;
            let last = if last.is_empty() {
                None
            } else {
                Some(number(last)?)
            };
            Spec::From { first, last }
        };
        specs.push(spec);
    }
    if specs.is_empty() {
        return Err(Refusal::Malformed);
    }
    Ok(specs)
}

/// Whether the decimal number `a` is less than `b`, for any length (both runs of digits; a run
/// that is not is left to [`number`] to refuse).
fn digits_less(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    (a.len(), a) < (b.len(), b)
}

/// A run of ASCII digits. Values beyond u64 saturate: they are positions past any real file's
/// end, which clamping then handles like any other.
fn number(digits: &str) -> Result<u64, Refusal> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::Malformed);
    }
    Ok(digits.bytes().fold(0u64, |n, digit| {
        n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
    }))
}

/// Meets a spec with the file's length: `None` when unsatisfiable.
fn clamp(spec: Spec, len: u64) -> Option<ByteRange> {
    let range = match spec {
        Spec::From { first, last } => ByteRange {
            start: first,
            end: last.map_or(len, |last| last.saturating_add(1).min(len)),
        },
        Spec::Suffix(n) => ByteRange {
            start: len.saturating_sub(n),
            end: len,
        },
    };
    (range.start < range.end).then_some(range)
}

/// Merges overlapping and adjacent ranges. Each merged part takes the position of the earliest
/// (in header order) range it absorbed.
fn coalesce(ranges: Vec<ByteRange>) -> Vec<ByteRange> {
    let mut by_start: Vec<(usize, ByteRange)> = ranges.into_iter().enumerate().collect();
    by_start.sort_by_key(|(_, range)| range.start);
    let mut merged: Vec<(usize, ByteRange)> = Vec::with_capacity(by_start.len());
    for (order, range) in by_start {
        match merged.last_mut() {
            Some((first_seen, last)) if range.start <= last.end => {
                last.end = last.end.max(range.end);
                *first_seen = (*first_seen).min(order);
            }
            _ => merged.push((order, range)),
        }
    }
    merged.sort_by_key(|(first_seen, _)| *first_seen);
    merged.into_iter().map(|(_, range)| range).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end_inclusive: u64) -> ByteRange {
        ByteRange {
            start,
            end: end_inclusive + 1,
        }
    }

    fn parts(header: &str, len: u64) -> Vec<ByteRange> {
        match plan(header, len) {
            RangePlan::Parts(parts) => parts,
            other => panic!("{header}: expected parts, got {other:?}"),
        }
    }

    #[test]
    fn single_suffix_and_open_ranges() {
        assert_eq!(parts("bytes=0-99", 1000), [r(0, 99)]);
        assert_eq!(parts("bytes=-500", 10_000), [r(9500, 9999)]);
        assert_eq!(parts("bytes=9500-", 10_000), [r(9500, 9999)]);
        assert_eq!(parts("BYTES=1-1", 10), [r(1, 1)]);
    }

    #[test]
    fn clamps_past_the_end() {
        assert_eq!(parts("bytes=5-100", 10), [r(5, 9)]);
        assert_eq!(parts("bytes=-100", 10), [r(0, 9)]);
        assert_eq!(parts("bytes=0-99999999999999999999999", 10), [r(0, 9)]);
        // An unsatisfiable range next to a satisfiable one is dropped.
        assert_eq!(parts("bytes=20-30,0-1", 10), [r(0, 1)]);
    }

    #[test]
    fn a_last_below_its_first_invalidates_the_header_however_large_both_are() {
        let header = "bytes=0-1,655555555555555555555555-68855555555555555555";
        assert_eq!(plan(header, 3136), RangePlan::Whole);
        assert_eq!(
            plan("bytes=0-1,0099-100", 10),
            RangePlan::Parts(vec![r(0, 1)])
        );
        assert_eq!(plan("bytes=0-1,100-0099", 10), RangePlan::Whole);
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(plan("bytes=10-", 10), RangePlan::Unsatisfiable);
        assert_eq!(plan("bytes=10-20,30-40", 10), RangePlan::Unsatisfiable);
        assert_eq!(plan("bytes=-0", 10), RangePlan::Unsatisfiable);
        assert_eq!(plan("bytes=0-0", 0), RangePlan::Unsatisfiable);
        assert_eq!(plan("bytes=-5", 0), RangePlan::Unsatisfiable);
        assert_eq!(
            plan("bytes=99999999999999999999-", 10),
            RangePlan::Unsatisfiable
        );
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for header in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "items=0-1",
            "bytes = 0-1",
            "bytes=abc",
            "bytes=5-1",
            "bytes=0-1,5-1",
            "bytes=-",
            "bytes=1",
            "bytes=+1-2",
            "bytes=0x1-2",
            "bytes=1-2-3",
            "bytes=0-1;0-2",
            "bytes=١-٢",
        ] {
            assert_eq!(plan(header, 100), RangePlan::Whole, "{header:?}");
        }
    }

    #[test]
    fn list_syntax_tolerates_whitespace_and_empty_elements() {
        assert_eq!(parts("bytes= 0-1 ,\t, 5-6,", 100), [r(0, 1), r(5, 6)]);
    }

    #[test]
    fn coalesces_overlapping_and_adjacent_in_order_of_first_appearance() {
        assert_eq!(parts("bytes=0-99,50-149", 1000), [r(0, 149)]);
        assert_eq!(parts("bytes=0-99,100-199", 1000), [r(0, 199)]);
        assert_eq!(parts("bytes=0-,0-,0-", 1000), [r(0, 999)]);
        assert_eq!(
            parts("bytes=500-599,0-99,50-149,900-", 1000),
            [r(500, 599), r(0, 149), r(900, 999)]
        );
        // The merged part sits where its earliest member was.
        assert_eq!(
            parts("bytes=800-899,300-399,0-9,250-320", 1000),
            [r(800, 899), r(250, 399), r(0, 9)]
        );
        // A gap of one byte is not adjacency.
        assert_eq!(parts("bytes=0-9,11-20", 1000), [r(0, 9), r(11, 20)]);
    }

    #[test]
    fn too_many_parts_are_refused() {
        let list: Vec<String> = (0..65).map(|i| format!("{}-{}", i * 10, i * 10)).collect();
        let header = format!("bytes={}", list.join(","));
        assert_eq!(plan(&header, 10_000), RangePlan::Whole);
        let header = format!("bytes={}", list[..64].join(","));
        assert_eq!(parts(&header, 10_000).len(), 64);
        // Many ranges that coalesce into few are fine ...
        let overlapping = vec!["0-9"; 500].join(",");
        assert_eq!(parts(&format!("bytes={overlapping}"), 100), [r(0, 9)]);
        // ... up to the number of specs looked at.
        let too_long = vec!["0-9"; MAX_RANGE_SPECS + 1].join(",");
        assert_eq!(plan(&format!("bytes={too_long}"), 100), RangePlan::Whole);
    }
}
