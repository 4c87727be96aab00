//! Reading `Sec-WebSocket-Extensions` offers and choosing the answer (RFC 7692 §5, §7.1).
//!
//! The server honours an offer only in the shape it can serve without per-connection state:
//! every answer carries `server_no_context_takeover` and `client_no_context_takeover` (the RFC
//! lets a server add both whatever the client offered). An offer the server cannot honour, or
//! that is malformed (an unknown, repeated or invalid parameter), is declined, and the next one
//! is considered (RFC 7692 §5: a server declines by leaving an offer out of its answer).

/// The extension token of RFC 7692.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// The window the server compresses with: LZ77 distances up to 32 KiB.
const SERVER_WINDOW_BITS: u8 = 15;

/// An accepted offer: what the answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// The client asked the server to use at most this window; the answer repeats it (it must,
    /// to accept such an offer: RFC 7692 §7.1.2.1). Only 15 is accepted (see [`Refusal`]).
    server_max_window_bits: Option<u8>,
}

impl Agreement {
    /// The value of the answer's `Sec-WebSocket-Extensions` header.
    pub fn header_value(&self) -> String {
        let mut answer =
            format!("{PERMESSAGE_DEFLATE}; server_no_context_takeover; client_no_context_takeover");
        if let Some(bits) = self.server_max_window_bits {
            answer.push_str(&format!("; server_max_window_bits={bits}"));
        }
        answer
    }
}

/// Why one offer is declined (the answer is then the next acceptable offer, or none).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not permessage-deflate")]
    OtherExtension,
    #[error("unknown parameter `{0}`")]
    UnknownParameter(String),
    #[error("parameter `{0}` given twice")]
    Repeated(String),
    #[error("parameter `{0}` has an invalid value")]
    InvalidValue(String),
    /// One compressed payload serves every member of a room, so the server compresses with one
    /// window size; a client that needs a smaller one gets uncompressed messages instead.
    #[error("server_max_window_bits={0}: the server compresses with a 15-bit window only")]
    SmallerServerWindow(u8),
}

/// The first acceptable permessage-deflate offer among the `Sec-WebSocket-Extensions` header
/// values (several headers, each a comma-separated list of offers), or `None`.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Option<Agreement> {
    header_values
        .into_iter()
        .flat_map(|value| value.split(','))
        .filter(|offer| !offer.trim().is_empty())
        .find_map(|offer| match accept(offer) {
            Ok(agreement) => Some(agreement),
            Err(refusal) => {
                log::debug!("declined extension offer `{}`: {refusal}", offer.trim());
                None
            }
        })
}

/// Accepts or declines one offer (`permessage-deflate; param; param=value`).
pub fn accept(offer: &str) -> Result<Agreement, Refusal> {
    let mut parts = offer.split(';').map(str::trim);
    let name = parts.next().unwrap_or_default();
    if !name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
        return Err(Refusal::OtherExtension);
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut agreement = Agreement {
        server_max_window_bits: None,
    };
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((key, value)) => (key.trim(), Some(unquote(value.trim()))),
            None => (param, None),
        };
        let key_lower = key.to_ascii_lowercase();
        let known = [
            "server_no_context_takeover",
            "client_no_context_takeover",
            "server_max_window_bits",
            "client_max_window_bits",
        ];
        let Some(&key) = known.iter().find(|known| **known == key_lower) else {
            return Err(Refusal::UnknownParameter(key.to_owned()));
        };
        if seen.contains(&key) {
            return Err(Refusal::Repeated(key.to_owned()));
        }
        seen.push(key);
        let invalid = || Refusal::InvalidValue(key.to_owned());
        match key {
            "server_no_context_takeover" | "client_no_context_takeover" => {
                if value.is_some() {
                    return Err(invalid());
                }
            }
            "server_max_window_bits" => {
                let bits = value.and_then(window_bits).ok_or_else(invalid)?;
                if bits != SERVER_WINDOW_BITS {
                    return Err(Refusal::SmallerServerWindow(bits));
                }
                agreement.server_max_window_bits = Some(bits);
            }
            // Without a value it only says the client could honour a limit; the server sets
            // none (it inflates with the largest window, and the client's takeover is off).
            _ => {
                if let Some(value) = value {
                    window_bits(value).ok_or_else(invalid)?;
                }
            }
        }
    }
    Ok(agreement)
}

/// A window-size value: a decimal 8 to 15 without leading zeros (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// A quoted-string value (RFC 7230 §3.2.6), as the RFC allows for window sizes.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|value| value.strip_suffix('"'))
        .unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    fn answer(values: &[&str]) -> Option<String> {
        negotiate(values.iter().copied()).map(|agreement| agreement.header_value())
    }

    #[test]
    fn a_bare_offer_is_answered_without_context_takeover_both_ways() {
        assert_eq!(answer(&["permessage-deflate"]).as_deref(), Some(PLAIN));
    }

    #[test]
    fn the_browser_offer_is_accepted() {
        // What Chromium and Firefox send.
        assert_eq!(
            answer(&["permessage-deflate; client_max_window_bits"]).as_deref(),
            Some(PLAIN)
        );
    }

    #[test]
    fn takeover_parameters_and_client_windows_are_accepted() {
        for offer in [
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate;client_max_window_bits=8",
            "permessage-deflate; client_max_window_bits=\"10\"",
            "Permessage-Deflate; SERVER_NO_CONTEXT_TAKEOVER",
        ] {
            assert_eq!(answer(&[offer]).as_deref(), Some(PLAIN), "{offer}");
        }
    }

    #[test]
    fn a_full_server_window_is_repeated_in_the_answer() {
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=15"]),
            Some(format!("{PLAIN}; server_max_window_bits=15"))
        );
    }

    #[test]
    fn bad_offers_are_declined() {
        for (offer, refusal) in [
            ("x-webkit-deflate-frame", Refusal::OtherExtension),
            (
                "permessage-deflate; mystery",
                Refusal::UnknownParameter("mystery".into()),
            ),
            (
                "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
                Refusal::Repeated("client_no_context_takeover".into()),
            ),
            (
                "permessage-deflate; server_no_context_takeover=1",
                Refusal::InvalidValue("server_no_context_takeover".into()),
            ),
            (
                "permessage-deflate; server_max_window_bits",
                Refusal::InvalidValue("server_max_window_bits".into()),
            ),
            (
                "permessage-deflate; client_max_window_bits=16",
                Refusal::InvalidValue("client_max_window_bits".into()),
            ),
            (
                "permessage-deflate; client_max_window_bits=09",
                Refusal::InvalidValue("client_max_window_bits".into()),
            ),
            (
                "permessage-deflate; server_max_window_bits=7",
                Refusal::InvalidValue("server_max_window_bits".into()),
            ),
            (
                "permessage-deflate; server_max_window_bits=10",
                Refusal::SmallerServerWindow(10),
            ),
        ] {
            assert_eq!(accept(offer), Err(refusal), "{offer}");
        }
    }

    #[test]
    fn the_first_acceptable_offer_wins_across_lists_and_headers() {
        assert_eq!(
            answer(&[
                "foo, permessage-deflate; server_max_window_bits=9",
                "permessage-deflate; client_max_window_bits=12, permessage-deflate; server_max_window_bits=15",
            ])
            .as_deref(),
            Some(PLAIN)
        );
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=10, permessage-deflate; server_max_window_bits=15"]),
            Some(format!("{PLAIN}; server_max_window_bits=15"))
        );
    }

    #[test]
    fn nothing_acceptable_means_no_extension() {
        assert_eq!(answer(&[]), None);
        assert_eq!(answer(&[""]), None);
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=8"]),
            None
        );
    }
}
