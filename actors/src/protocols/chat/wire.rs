//! The JSON wire format of `chat`: one JSON object per text message, its kind in `"type"`.
//! README.md ("The chat protocol") documents it for client authors; keep the two together.
//!
//! Outgoing events are serialized once into a [`ByteString`]; a room event is then shared by
//! reference count with every member and kept, as is, in the room's history.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::{value::RawValue, Value};

use super::error::ChatError;

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Enter a room. `since` + `epoch` ask for the messages missed since message `since`.
    Join {
        room: String,
        nick: Option<String>,
        since: Option<u64>,
        epoch: Option<String>,
    },
    Leave {
        room: String,
    },
    Say {
        room: String,
        text: String,
    },
    /// Change this connection's nick, in every room it is in.
    Nick {
        nick: String,
    },
    /// Replace the connection's token with a newer one of the same user, before it expires.
    Refresh {
        token: String,
    },
}

/// The request types, for telling an unknown type from a malformed known one.
const REQUEST_TYPES: [&str; 5] = ["join", "leave", "say", "nick", "refresh"];

/// Parses a request; a failure says whether it was not JSON, not a known type, or a known type
/// with wrong fields.
pub fn parse(text: &str) -> Result<Request, ChatError> {
    serde_json::from_str(text).map_err(|err| classify(text, err))
}

/// Only runs on the error path, so the second parse costs nothing for good requests.
fn classify(text: &str, err: serde_json::Error) -> ChatError {
    if err.is_syntax() || err.is_eof() {
        return ChatError::BadJson(err.to_string());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => match object.get("type") {
            Some(Value::String(kind)) if !REQUEST_TYPES.contains(&kind.as_str()) => {
                ChatError::UnknownType(kind.clone())
            }
            Some(Value::String(_)) => ChatError::BadRequest(err.to_string()),
            _ => ChatError::BadRequest("\"type\" (a string) is missing".to_owned()),
        },
        Ok(_) => ChatError::BadRequest("not an object".to_owned()),
        Err(err) => ChatError::BadJson(err.to_string()),
    }
}

/// Whether a presence event is about someone arriving or going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Join,
    Leave,
}

/// What the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event<'a> {
    /// The answer to `join`: the room as it is now, and what the client missed.
    Joined {
        room: &'a str,
        epoch: &'a str,
        nick: &'a str,
        members: Vec<&'a str>,
        /// The id of the room's latest message (0: none yet); live messages follow from here.
        last_id: u64,
        /// With `since`: whether `history` is exactly what was missed. Without: false.
        recovered: bool,
        /// `message` events, oldest first.
        history: Vec<&'a RawValue>,
    },
    Left {
        room: &'a str,
    },
    Message {
        room: &'a str,
        id: u64,
        epoch: &'a str,
        /// Milliseconds since the Unix epoch, when the server stamped it.
        ts: u64,
        nick: &'a str,
        text: &'a str,
    },
    Presence {
        room: &'a str,
        event: Presence,
        nick: &'a str,
    },
    /// A nick change: in a room (`room` set), or the confirmation of one's own (no `room`).
    Nick {
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
        old: &'a str,
        new: &'a str,
    },
    /// The connection's token expires in `in_ms` milliseconds: send a `refresh` before.
    Expiring {
        in_ms: u64,
    },
    /// The answer to a good `refresh`: the new token's expiry (seconds since the Unix epoch).
    Refreshed {
        exp: Option<u64>,
    },
    Error {
        code: &'a str,
        /// The room of an error about a whole room (`history_lost`).
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
        message: &'a str,
    },
}

impl Event<'_> {
    /// The event as JSON text, built once to be shared.
    pub fn encode(&self) -> ByteString {
        // Every field is a string, a number, a bool or JSON text we wrote: cannot fail.
        ByteString::from(serde_json::to_string(self).expect("chat events always serialize"))
    }

    pub fn error(error: &ChatError) -> ByteString {
        Event::Error {
            code: error.code(),
            room: error.room(),
            message: &error.to_string(),
        }
        .encode()
    }
}

/// A stored event as JSON to embed in another one (the history of `joined`). The stored text
/// is JSON this module wrote, so this only re-checks it; it does not copy it.
pub fn raw(stored: &str) -> &RawValue {
    serde_json::from_str(stored).expect("stored chat events are JSON written by Event::encode")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_request() {
        assert_eq!(
            parse(r#"{"type":"join","room":"lobby","nick":"ann","since":41,"epoch":"e1"}"#),
            Ok(Request::Join {
                room: "lobby".into(),
                nick: Some("ann".into()),
                since: Some(41),
                epoch: Some("e1".into()),
            })
        );
        assert_eq!(
            parse(r#"{"type":"join","room":"lobby"}"#),
            Ok(Request::Join {
                room: "lobby".into(),
                nick: None,
                since: None,
                epoch: None,
            })
        );
        assert_eq!(
            parse(r#"{"room":"r","type":"say","text":"hi"}"#),
            Ok(Request::Say {
                room: "r".into(),
                text: "hi".into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"leave","room":"r"}"#),
            Ok(Request::Leave { room: "r".into() })
        );
        assert_eq!(
            parse(r#"{"type":"nick","nick":"bo"}"#),
            Ok(Request::Nick { nick: "bo".into() })
        );
        assert_eq!(
            parse(r#"{"type":"refresh","token":"a.b.c"}"#),
            Ok(Request::Refresh {
                token: "a.b.c".into()
            })
        );
    }

    #[test]
    fn classifies_failures() {
        let code = |text: &str| parse(text).unwrap_err().code();
        assert_eq!(code("{not json"), "bad_json");
        assert_eq!(code(""), "bad_json");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"say","room":"r"}"#), "bad_request");
        assert_eq!(
            code(r#"{"type":"say","room":"r","text":"x","extra":1}"#),
            "bad_request"
        );
        assert_eq!(
            code(r#"{"type":"join","room":"r","since":-1}"#),
            "bad_request"
        );
        assert_eq!(code(r#"{"room":"r"}"#), "bad_request");
        assert_eq!(code("[1,2]"), "bad_request");
    }

    #[test]
    fn events_have_their_documented_shape() {
        let message = Event::Message {
            room: "r",
            id: 7,
            epoch: "e",
            ts: 1,
            nick: "ann",
            text: "hi \"you\"",
        }
        .encode();
        assert_eq!(
            &*message,
            r#"{"type":"message","room":"r","id":7,"epoch":"e","ts":1,"nick":"ann","text":"hi \"you\""}"#
        );
        let joined = Event::Joined {
            room: "r",
            epoch: "e",
            nick: "ann",
            members: vec!["ann"],
            last_id: 7,
            recovered: true,
            history: vec![raw(&message)],
        }
        .encode();
        let value: Value = serde_json::from_str(&joined).unwrap();
        assert_eq!(value["history"][0]["text"], "hi \"you\"");
        let own_nick = Event::Nick {
            room: None,
            old: "a",
            new: "b",
        }
        .encode();
        assert_eq!(&*own_nick, r#"{"type":"nick","old":"a","new":"b"}"#);
        let presence = Event::Presence {
            room: "r",
            event: Presence::Leave,
            nick: "a",
        }
        .encode();
        assert_eq!(
            &*presence,
            r#"{"type":"presence","room":"r","event":"leave","nick":"a"}"#
        );
    }
}
