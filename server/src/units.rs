//! Parsers for sizes and durations on the command line, in env vars and in config files.
//!
//! Every size flag of the project accepts a plain number of bytes (`1048576`) or a number with a
//! unit (`64KiB`, `16MiB`, `1GB`); every duration flag accepts a plain number of seconds (`30`) or
//! a number with a unit (`500ms`, `2m`, `1h 30m`). One parser each keeps that promise uniform.

use std::time::Duration;

/// Parses a byte size: plain bytes, or a number with a decimal (kB, MB) or binary (KiB, MiB) unit.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty size".into());
    }
    let size = text
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| format!("`{text}` is not a size (examples: 65536, 64KiB, 16MiB)"))?;
    // bytesize saturates a size past u64 (`20000EiB`, `99999999999999999999kB`) to u64::MAX
    // rather than refusing it. That value itself can only be written in bytes, as 2^64 - 1 is
    // no whole multiple of any unit, so any other way to reach it was an overflow.
    let in_bytes = text.trim_end_matches(['b', 'B']).trim_end();
    if size == u64::MAX && in_bytes.parse::<u64>() != Ok(u64::MAX) {
        return Err(format!(
            "`{text}` is too large (at most {} bytes)",
            u64::MAX
        ));
    }
    Ok(size)
}

/// Parses a byte size that must fit in memory-sized arithmetic (`usize`).
pub fn parse_usize_bytes(text: &str) -> Result<usize, String> {
    let bytes = parse_bytes(text)?;
    usize::try_from(bytes).map_err(|_| format!("`{text}` is too large"))
}

/// Parses a duration: plain seconds, or a number with a unit (`ms`, `s`, `m`, `h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text)
        .map_err(|_| format!("`{text}` is not a duration (examples: 30, 500ms, 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_plain_numbers_and_units() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_bytes("16MiB"), Ok(16 * 1024 * 1024));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("2kB"), Ok(2000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("-5").is_err());
    }

    #[test]
    fn sizes_past_u64_are_refused_not_clamped() {
        // Found by the `units` fuzz target: these were all u64::MAX.
        assert!(parse_bytes("17417752110260178102EB").is_err());
        assert!(parse_bytes("16EiB").is_err());
        assert!(parse_bytes("18446744073709551616").is_err());
        assert!(parse_bytes("18446744073709551615.5 B").is_err());
        assert_eq!(parse_bytes("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_bytes("18446744073709551615 B"), Ok(u64::MAX));
        assert_eq!(parse_bytes("15EiB"), Ok(15 << 60));
    }

    #[test]
    fn durations_accept_plain_seconds_and_units() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
