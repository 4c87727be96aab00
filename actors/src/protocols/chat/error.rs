//! Everything a client can do wrong, and the one place that maps it to the `code` of an `error`
//! event. None of these closes the connection: the request is refused (or, for `history_lost`,
//! the client is told of a gap), the connection stays.

use crate::access::TokenError;

/// Why a client's request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatError {
    #[error("not JSON: {0}")]
    BadJson(String),
    #[error("a request is a JSON object with a known \"type\": {0}")]
    BadRequest(String),
    #[error("unknown request type \"{0}\" (known: join, leave, say, nick, refresh)")]
    UnknownType(String),
    #[error("requests are JSON in text messages, not binary ones")]
    BinaryFrame,
    #[error("request of {size} bytes is larger than any valid request (at most {max})")]
    TooLarge { size: usize, max: usize },
    #[error("text is longer than {max} bytes")]
    TextTooLong { max: usize },
    #[error("nick is longer than {max} characters")]
    NickTooLong { max: usize },
    #[error("a nick is 1 or more characters, none of them control characters")]
    BadNick,
    #[error("join needs a nick (none set on this connection yet)")]
    NickRequired,
    #[error("a room name is 1 to {max} bytes, without control characters")]
    BadRoom { max: usize },
    #[error("already in {max} rooms, the most one connection may be in")]
    TooManyRooms { max: usize },
    #[error("already in room \"{0}\"")]
    AlreadyInRoom(String),
    #[error("not in room \"{0}\"")]
    NotInRoom(String),
    #[error("more than {rate} messages per second (burst {burst}); this one was dropped")]
    RateLimited { rate: f64, burst: f64 },
    #[error("the cluster's broker cannot be reached; nothing was sent, try again")]
    Unavailable,
    #[error(
        "messages of room \"{0}\" were missed and are no longer kept; join it again to get what is"
    )]
    HistoryLost(String),
    /// The connection's token does not allow it (see [`Forbidden`]).
    #[error("{why}")]
    Forbidden {
        room: Option<String>,
        why: Forbidden,
    },
    #[error("the token was refused: {0}")]
    BadToken(#[from] TokenError),
}

/// What a connection's token (or the lack of tokens) does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    #[error("the nick is the token's name and cannot be changed")]
    Rename,
    #[error("this room is private: the token's `rooms` claim does not name it")]
    PrivateRoom,
    #[error("the token does not allow sending (`publish` is false)")]
    Publish,
    #[error("a refresh must carry a token of the same user (`sub`)")]
    OtherUser,
    #[error("tokens are not in use on this server")]
    NoTokens,
}

impl ChatError {
    /// The stable, machine-readable code clients match on (documented in README.md).
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::BadJson(_) => "bad_json",
            ChatError::BadRequest(_) => "bad_request",
            ChatError::UnknownType(_) => "unknown_type",
            ChatError::BinaryFrame => "binary_frame",
            ChatError::TooLarge { .. } => "too_large",
            ChatError::TextTooLong { .. } => "text_too_long",
            ChatError::NickTooLong { .. } => "nick_too_long",
            ChatError::BadNick => "bad_nick",
            ChatError::NickRequired => "nick_required",
            ChatError::BadRoom { .. } => "bad_room",
            ChatError::TooManyRooms { .. } => "too_many_rooms",
            ChatError::AlreadyInRoom(_) => "already_in_room",
            ChatError::NotInRoom(_) => "not_in_room",
            ChatError::RateLimited { .. } => "rate_limited",
            ChatError::Unavailable => "unavailable",
            ChatError::HistoryLost(_) => "history_lost",
            ChatError::Forbidden { .. } => "forbidden",
            ChatError::BadToken(_) => "bad_token",
        }
    }

    /// The room the error is about, for errors that concern a whole room rather than a request.
    pub fn room(&self) -> Option<&str> {
        match self {
            ChatError::HistoryLost(room) => Some(room),
            ChatError::Forbidden {
                room: Some(room), ..
            } => Some(room),
            _ => None,
        }
    }
}
