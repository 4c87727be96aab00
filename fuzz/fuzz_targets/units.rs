//! The size and duration units of flags, env vars and config files.
//!
//! Properties: any text parses or is refused, never a panic; a size or duration that does not
//! fit is refused, never wrapped or clamped to the largest value; a whole number with a unit is
//! exactly number × unit; and writing a value then parsing it gives the value back (plain
//! bytes, a whole number of any unit, plain seconds, milliseconds, and humantime's own format).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};
use switchboard::fuzzing::{parse_bytes, parse_duration, parse_usize_bytes};

const SIZE_UNITS: [(&str, u64); 13] = [
    ("B", 1),
    ("kB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
    ("EB", 1_000_000_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("PiB", 1 << 50),
    ("EiB", 1 << 60),
];

const TIME_UNITS: [(&str, u64); 4] = [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mode) = u.int_in_range(0u8..=2) else {
        return;
    };
    match mode {
        0 => {
            let text = u.arbitrary::<&str>().unwrap_or_default();
            arbitrary_text(text);
        }
        1 => {
            let value = u.arbitrary::<u64>().unwrap_or(0);
            let (unit, factor) = *u.choose(&SIZE_UNITS).unwrap_or(&SIZE_UNITS[0]);
            let space = if u.arbitrary::<bool>().unwrap_or(false) {
                " "
            } else {
                ""
            };
            assert_eq!(parse_bytes(&value.to_string()), Ok(value));
            assert_eq!(parse_usize_bytes(&value.to_string()), Ok(value as usize));
            let whole = value / factor;
            assert_eq!(
                parse_bytes(&format!("{whole}{space}{unit}")),
                Ok(whole * factor)
            );
            // The number itself, with a unit: exact, or refused if it does not fit.
            let text = format!("{value}{space}{unit}");
            match u128::from(value) * u128::from(factor) {
                exact if exact <= u128::from(u64::MAX) => {
                    assert_eq!(parse_bytes(&text), Ok(exact as u64), "{text}")
                }
                _ => assert!(
                    parse_bytes(&text).is_err(),
                    "{text} overflowed to {:?}",
                    parse_bytes(&text)
                ),
            }
        }
        _ => {
            let seconds = u.arbitrary::<u64>().unwrap_or(0);
            let nanos = u.int_in_range(0u32..=999_999_999).unwrap_or(0);
            assert_eq!(
                parse_duration(&seconds.to_string()),
                Ok(Duration::from_secs(seconds))
            );
            let millis = seconds / 1000;
            // humantime counts a number of milliseconds in u64 nanoseconds: more is refused
            // (an error, not a wrong value).
            let text = format!("{millis}ms");
            if millis.checked_mul(1_000_000).is_some() {
                assert_eq!(
                    parse_duration(&text),
                    Ok(Duration::from_millis(millis)),
                    "{text}"
                );
            } else {
                assert!(parse_duration(&text).is_err(), "{text}");
            }
            let duration = Duration::new(seconds / 4, nanos);
            let written = humantime::format_duration(duration).to_string();
            assert_eq!(parse_duration(&written), Ok(duration), "{written}");
            let (unit, factor) = *u.choose(&TIME_UNITS).unwrap_or(&TIME_UNITS[0]);
            let text = format!("{seconds}{unit}");
            match seconds.checked_mul(factor) {
                Some(exact) => assert_eq!(
                    parse_duration(&text),
                    Ok(Duration::from_secs(exact)),
                    "{text}"
                ),
                None => assert!(parse_duration(&text).is_err(), "{text} overflowed"),
            }
        }
    }
});

/// Any text: refused, or a value a reference reading agrees with where it has one.
fn arbitrary_text(text: &str) {
    let size = parse_bytes(text);
    if let Ok(size) = size {
        assert_eq!(parse_usize_bytes(text), Ok(size as usize));
    }
    // `<digits><space?><unit>`: exactly digits × unit, or refused when that does not fit.
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(digits_end);
    let mut exact_known = false;
    let significant = digits.trim_start_matches('0');
    if !digits.is_empty() && significant.len() < 30 {
        let number: u128 = significant.parse().unwrap_or(0);
        let unit = suffix.trim_start();
        let factor = if unit.is_empty() {
            Some(1)
        } else {
            SIZE_UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, factor)| *factor)
        };
        if let Some(factor) = factor {
            exact_known = true;
            let exact = number.saturating_mul(u128::from(factor));
            if exact <= u128::from(u64::MAX) {
                assert_eq!(size, Ok(exact as u64), "{text:?}");
            } else {
                assert!(size.is_err(), "{text:?} overflowed to {size:?}");
            }
        }
    }
    // Any other accepted size that is the largest value must have been written as that value
    // (a saturated fraction or unit otherwise).
    if size == Ok(u64::MAX) && !exact_known {
        let in_bytes = trimmed.trim_end_matches(['b', 'B']).trim_end();
        assert_eq!(
            in_bytes.parse::<u64>(),
            Ok(u64::MAX),
            "{text:?} clamped to u64::MAX"
        );
    }
    let _ = parse_duration(text);
}
