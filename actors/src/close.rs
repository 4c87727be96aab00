//! Why a WebSocket connection is closed, and the one mapping from that to a close code.

use actix_http::ws::ProtocolError;

/// Close codes of RFC 6455 §7.4.1 that the server sends.
pub mod code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// Application range (4000-4999): the connection's token expired.
    pub const TOKEN_EXPIRED: u16 = 4001;
}

/// A reason for the server to close a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseError {
    /// The peer broke RFC 6455 framing rules.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A text message (or close reason) was not valid UTF-8.
    #[error("invalid UTF-8 in text message")]
    InvalidUtf8,
    /// A compressed message (permessage-deflate) could not be inflated. RFC 7692 §8.1 says to
    /// fail the connection; like bad UTF-8, the payload is not what its frame says: 1007.
    #[error("invalid compressed data")]
    BadCompression,
    /// A message grew past `--max-message-size` (inflated, if it was compressed).
    #[error("message too big")]
    TooBig,
    /// The connection's outbound backlog passed `--max-backlog` under the `close` policy.
    #[error("slow consumer")]
    SlowConsumer,
    /// The peer said nothing for `--idle-timeout`.
    #[error("idle timeout")]
    IdleTimeout,
    /// The server is shutting down.
    #[error("going away")]
    GoingAway,
    /// The connection's token reached its `exp` without being renewed.
    #[error("token expired")]
    TokenExpired,
}

impl CloseError {
    /// The close code sent for this reason.
    pub fn code(&self) -> u16 {
        match self {
            CloseError::Protocol(_) => code::PROTOCOL_ERROR,
            CloseError::InvalidUtf8 | CloseError::BadCompression => code::INVALID_PAYLOAD,
            CloseError::TooBig => code::TOO_BIG,
            CloseError::SlowConsumer => code::POLICY,
            CloseError::IdleTimeout | CloseError::GoingAway => code::GOING_AWAY,
            CloseError::TokenExpired => code::TOKEN_EXPIRED,
        }
    }

    /// The close reason sent for this error (at most 123 bytes, as a close frame allows).
    pub fn reason(&self) -> String {
        let mut reason = self.to_string();
        truncate_to_char_boundary(&mut reason, 123);
        reason
    }

    /// Maps an error of actix-http's frame decoder. `None` means the transport itself failed
    /// (the peer is gone), so there is nobody to send a close frame to.
    pub fn from_decoder(err: &ProtocolError) -> Option<CloseError> {
        Some(match err {
            ProtocolError::Overflow => CloseError::TooBig,
            ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                // The decoder reports non-zero reserved bits as InvalidData.
                CloseError::Protocol(io.to_string())
            }
            // Any other I/O error comes from the socket (`crate::inbound` maps the frame
            // guard's refusal to `Overflow`; text is checked as UTF-8 by the assembler).
            ProtocolError::Io(_) => return None,
            other => CloseError::Protocol(other.to_string()),
        })
    }
}

impl From<crate::deflate::InflateError> for CloseError {
    fn from(err: crate::deflate::InflateError) -> Self {
        match err {
            crate::deflate::InflateError::TooBig => CloseError::TooBig,
            crate::deflate::InflateError::Corrupt(_) => CloseError::BadCompression,
        }
    }
}

fn truncate_to_char_boundary(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_has_its_code() {
        assert_eq!(CloseError::Protocol("x".into()).code(), 1002);
        assert_eq!(CloseError::InvalidUtf8.code(), 1007);
        assert_eq!(CloseError::TooBig.code(), 1009);
        assert_eq!(CloseError::SlowConsumer.code(), 1008);
        assert_eq!(CloseError::SlowConsumer.reason(), "slow consumer");
    }

    #[test]
    fn reasons_fit_in_a_control_frame() {
        let long = CloseError::Protocol("é".repeat(200));
        assert!(long.reason().len() <= 123);
    }
}
