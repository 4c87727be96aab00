//! The `Range` header parser and the multipart/byteranges body.
//!
//! For any header and file length: every part lies inside the file, is non-empty, and parts
//! neither overlap nor touch (they were coalesced); together they cover exactly the bytes the
//! header's satisfiable ranges name (checked against a byte-by-byte reference on short files);
//! there are at most `MAX_PARTS`. A well-formed header with nothing satisfiable is a 416, and
//! never for a header the reference reads as malformed. The multipart body, laid out and then
//! filled in from a file, parses back into exactly the file's bytes at the parts, each with
//! its `Content-Range`, and its announced length is its real length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::fuzzing::{
    range_plan, total_len, ByteRange, Multipart, RangePlan, Segment, MAX_PARTS,
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // The file's length: short (byte-exact reference) or anywhere in u64.
    let len = match data[0] % 4 {
        0 => u64::from(data[1]) * 64 + u64::from(data[0] >> 2),
        1 => u64::MAX - u64::from(data[1]),
        _ => u64::from(data[1]),
    };
    let Ok(header) = std::str::from_utf8(&data[2..]) else {
        return;
    };
    let plan = range_plan(header, len);
    let reference = reference(header, len);
    match (&plan, &reference) {
        (RangePlan::Whole, None) => {}
        // Refused for its size (too many specs or parts): allowed to serve the whole file.
        (RangePlan::Whole, Some(ranges)) => {
            assert!(
                header
                    .split(',')
                    .filter(|e| !e.trim_matches([' ', '\t']).is_empty())
                    .count()
                    > 1024
                    || coalesce(ranges.clone()).len() > MAX_PARTS,
                "a well-formed, modest header was ignored: {header:?}"
            );
        }
        (RangePlan::Unsatisfiable, Some(ranges)) => {
            assert!(
                ranges.is_empty(),
                "416 for a satisfiable header: {header:?}"
            );
        }
        (RangePlan::Parts(parts), Some(ranges)) => {
            check_parts(parts, len);
            assert_eq!(
                sorted(parts.clone()),
                coalesce(ranges.clone()),
                "the parts are not the header's ranges: {header:?} len {len}"
            );
            if len <= 4096 {
                let mut want = vec![false; len as usize];
                for range in ranges {
                    want[range.start as usize..range.end as usize].fill(true);
                }
                let mut got = vec![false; len as usize];
                for part in parts {
                    got[part.start as usize..part.end as usize].fill(true);
                }
                assert_eq!(want, got);
                multipart(parts, len);
            }
        }
        (plan, reference) => panic!("{header:?} len {len}: plan {plan:?}, reference {reference:?}"),
    }
});

fn check_parts(parts: &[ByteRange], len: u64) {
    assert!(!parts.is_empty() && parts.len() <= MAX_PARTS);
    for part in parts {
        assert!(
            part.start < part.end && part.end <= len,
            "{part:?} outside 0..{len}"
        );
    }
    let sorted = sorted(parts.to_vec());
    for pair in sorted.windows(2) {
        assert!(
            pair[0].end < pair[1].start,
            "parts overlap or touch: {pair:?}"
        );
    }
}

fn sorted(mut parts: Vec<ByteRange>) -> Vec<ByteRange> {
    parts.sort_by_key(|part| part.start);
    parts
}

/// Satisfiable ranges, merged (sorted by start).
fn coalesce(ranges: Vec<ByteRange>) -> Vec<ByteRange> {
    let mut merged: Vec<ByteRange> = Vec::new();
    for range in sorted(ranges) {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// The reference reading of RFC 9110 §14.1.1: `None` for a header that is not a byte range
/// set, else its satisfiable ranges (clamped to the file, empty when none is).
fn reference(header: &str, len: u64) -> Option<Vec<ByteRange>> {
    let (unit, set) = header.split_once('=')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let digits = |s: &str| -> Option<u128> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Saturate far beyond any u64 length.
        Some(s.bytes().fold(0u128, |n, d| {
            (n * 10 + u128::from(d - b'0')).min(u128::from(u64::MAX) * 4)
        }))
    };
    // Order as written, exactly, whatever the length (saturated values would tie).
    let less = |a: &str, b: &str| {
        let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
        (a.len(), a) < (b.len(), b)
    };
    let len128 = u128::from(len);
    let mut ranges = Vec::new();
    let mut any = false;
    for element in set.split(',') {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() {
            continue;
        }
        any = true;
        let (first, last) = element.split_once('-')?;
        let (start, end) = if first.is_empty() {
            let n = digits(last)?;
            (len128.saturating_sub(n), len128)
        } else {
            let first_text = first;
            let first = digits(first)?;
            let end = if last.is_empty() {
                len128
            } else {
                if less(last, first_text) {
                    return None;
                }
                let last = digits(last)?;
                (last + 1).min(len128)
            };
            (first, end)
        };
        if start < end {
            ranges.push(ByteRange {
                start: start as u64,
                end: end as u64,
            });
        }
    }
    any.then_some(ranges)
}

/// Lays out the body, fills it in from a file whose byte i is a hash of i, and reads it back.
fn multipart(parts: &[ByteRange], len: u64) {
    let file: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(151) >> 3) as u8 ^ i as u8)
        .collect();
    let content_type = "text/plain; charset=utf-8";
    let multipart = Multipart::new(parts, len, content_type);
    let mut body = Vec::new();
    for segment in &multipart.segments {
        match segment {
            Segment::Literal(bytes) => body.extend_from_slice(bytes),
            Segment::File { offset, len } => {
                body.extend_from_slice(&file[*offset as usize..(*offset + *len) as usize])
            }
        }
    }
    assert_eq!(total_len(&multipart.segments), body.len() as u64);
    assert_eq!(
        multipart.content_type(),
        format!("multipart/byteranges; boundary={}", multipart.boundary)
    );
    // Read it back as a client would (RFC 2046 §5.1.1).
    let delimiter = format!("--{}", multipart.boundary).into_bytes();
    let mut rest: &[u8] = &body;
    assert!(rest.starts_with(&delimiter), "no first delimiter");
    rest = &rest[delimiter.len()..];
    let mut seen = Vec::new();
    loop {
        if rest == b"--\r\n" {
            break;
        }
        assert!(
            rest.starts_with(b"\r\n"),
            "a delimiter without its line end"
        );
        rest = &rest[2..];
        let head_end = find(rest, b"\r\n\r\n").expect("a part without the end of its headers");
        let head = std::str::from_utf8(&rest[..head_end]).unwrap();
        rest = &rest[head_end + 4..];
        let mut close = b"\r\n".to_vec();
        close.extend_from_slice(&delimiter);
        let body_end = find(rest, &close).expect("a part without a delimiter after it");
        let content = &rest[..body_end];
        rest = &rest[body_end + close.len()..];
        let part = parts[seen.len()];
        assert_eq!(
            head,
            format!(
                "Content-Type: {content_type}\r\nContent-Range: bytes {}-{}/{len}",
                part.start,
                part.end - 1
            )
        );
        assert_eq!(content, &file[part.start as usize..part.end as usize]);
        seen.push(part);
    }
    assert_eq!(seen.len(), parts.len(), "parts are missing from the body");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
