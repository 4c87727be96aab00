//! The per-connection limits of `chat`: sizes of what a client sends, rooms it may be in, and
//! how fast it may send. They are checked on the connection's own thread, before anything
//! reaches the owner of the rooms, so a misbehaving client costs the other rooms nothing.

use std::time::Instant;

use super::error::ChatError;
use crate::config::ProtocolSettings;

/// Longest room name, in bytes. Room names also key the registry and the owner's map.
pub const MAX_ROOM: usize = 128;

/// The configured limits (`--chat-max-text`, `--chat-max-nick`, `--chat-max-rooms`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_text: usize,
    pub max_nick: usize,
    pub max_rooms: usize,
}

impl Limits {
    pub fn new(settings: &ProtocolSettings) -> Limits {
        Limits {
            max_text: settings.chat_max_text,
            max_nick: settings.chat_max_nick,
            max_rooms: settings.chat_max_rooms,
        }
    }

    /// The largest request that could be valid: every string at its limit and escaped as
    /// `\uXXXX` (6 bytes per byte), plus room for the keys. Larger ones are refused unparsed.
    pub fn max_request(&self) -> usize {
        6 * (self.max_text + 4 * self.max_nick + MAX_ROOM) + 1024
    }

    pub fn check_request_size(&self, size: usize) -> Result<(), ChatError> {
        let max = self.max_request();
        if size > max {
            return Err(ChatError::TooLarge { size, max });
        }
        Ok(())
    }

    pub fn check_text(&self, text: &str) -> Result<(), ChatError> {
        if text.is_empty() {
            return Err(ChatError::BadRequest("text is empty".to_owned()));
        }
        if text.len() > self.max_text {
            return Err(ChatError::TextTooLong { max: self.max_text });
        }
        Ok(())
    }

    /// A nick is shown to others: 1 to `max_nick` characters, no control characters, not
    /// only spaces.
    pub fn check_nick(&self, nick: &str) -> Result<(), ChatError> {
        if nick.chars().count() > self.max_nick {
            return Err(ChatError::NickTooLong { max: self.max_nick });
        }
        if nick.trim().is_empty() || nick.chars().any(char::is_control) {
            return Err(ChatError::BadNick);
        }
        Ok(())
    }
}

/// Room names are 1 to [`MAX_ROOM`] bytes without control characters. This also keeps them
/// apart from each connection's private reply group, whose name starts with NUL.
pub fn check_room(room: &str) -> Result<(), ChatError> {
    if room.is_empty() || room.len() > MAX_ROOM || room.chars().any(char::is_control) {
        return Err(ChatError::BadRoom { max: MAX_ROOM });
    }
    Ok(())
}

/// A token bucket: `burst` tokens at most, refilled at `rate` per second, one per message.
/// Every request counts (joins and malformed ones too): each one costs the server work.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        // A burst below one message would refuse everything.
        let capacity = burst.max(1.0);
        TokenBucket {
            rate,
            burst,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes a token for one message, or says which limit it exceeds.
    pub fn take(&mut self, now: Instant) -> Result<(), ChatError> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(ChatError::RateLimited {
                rate: self.rate,
                burst: self.burst,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_text: 10,
            max_nick: 3,
            max_rooms: 2,
        }
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 3.0, start);
        for _ in 0..3 {
            assert!(bucket.take(start).is_ok());
        }
        assert_eq!(bucket.take(start).unwrap_err().code(), "rate_limited");
        // Half a second at 2/s gives one token back, not more.
        let later = start + Duration::from_millis(500);
        assert!(bucket.take(later).is_ok());
        assert!(bucket.take(later).is_err());
        // A long pause refills only up to the burst.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(bucket.take(much_later).is_ok());
        }
        assert!(bucket.take(much_later).is_err());
    }

    #[test]
    fn a_fractional_burst_still_lets_one_through() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1.0, 0.5, start);
        assert!(bucket.take(start).is_ok());
        assert!(bucket.take(start).is_err());
    }

    #[test]
    fn nick_length_counts_characters() {
        let limits = limits();
        assert!(limits.check_nick("ééé").is_ok());
        assert_eq!(
            limits.check_nick("abcd").unwrap_err().code(),
            "nick_too_long"
        );
        assert_eq!(limits.check_nick("").unwrap_err().code(), "bad_nick");
        assert_eq!(limits.check_nick("  ").unwrap_err().code(), "bad_nick");
        assert_eq!(limits.check_nick("a\nb").unwrap_err().code(), "bad_nick");
    }

    #[test]
    fn text_length_counts_bytes() {
        let limits = limits();
        assert!(limits.check_text("0123456789").is_ok());
        assert_eq!(
            limits.check_text("ééééé é").unwrap_err().code(),
            "text_too_long"
        );
        assert_eq!(limits.check_text("").unwrap_err().code(), "bad_request");
    }

    #[test]
    fn room_names() {
        assert!(check_room("lobby").is_ok());
        assert!(check_room("").is_err());
        assert!(check_room("\0private").is_err());
        assert!(check_room(&"x".repeat(MAX_ROOM + 1)).is_err());
    }
}
