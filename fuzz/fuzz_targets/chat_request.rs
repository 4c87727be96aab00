//! The chat request parser and the per-connection limits, applied as a connection applies them
//! (size first, then the parse, then each field's limit).
//!
//! Properties: parsing never panics and classifies every failure; a request that parses comes
//! out the same from the same JSON written compactly (the parse depends on the JSON, not on its
//! layout); `UnknownType` is reported exactly for an object whose `type` string is not one of
//! the five kinds; the size check never refuses a request that is within every field limit and
//! written compactly (so `max_request` is a true upper bound); and the field checks accept
//! exactly what their documented rules say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_actors::fuzzing::{
    check_room, parse_chat_request, ChatError, ChatRequest, Limits, MAX_ROOM,
};

const TYPES: [&str; 5] = ["join", "leave", "say", "nick", "refresh"];

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let limits = Limits {
        max_text: usize::from(data[0]) * 16,
        max_nick: usize::from(data[1] % 64),
        max_rooms: 4,
    };
    let Ok(text) = std::str::from_utf8(&data[2..]) else {
        return;
    };
    let parsed = parse_chat_request(text);
    let value = serde_json::from_str::<Value>(text);

    match &parsed {
        Ok(request) => {
            // The same JSON written compactly parses to the same request.
            let compact =
                serde_json::to_string(value.as_ref().expect("a request is JSON")).unwrap();
            assert_eq!(
                parse_chat_request(&compact).as_ref(),
                Ok(request),
                "{compact}"
            );
            let fields_ok = fields_within_limits(request, &limits);
            if fields_ok {
                assert!(
                    limits.check_request_size(compact.len()).is_ok(),
                    "a valid request of {} bytes (compact) is over max_request {}",
                    compact.len(),
                    limits.max_request()
                );
            }
        }
        Err(ChatError::BadJson(_)) => {
            assert!(value.is_err(), "JSON called not JSON: {text:?}");
        }
        Err(ChatError::UnknownType(kind)) => {
            assert!(!TYPES.contains(&kind.as_str()));
            let Ok(Value::Object(object)) = &value else {
                panic!("unknown type for a non-object");
            };
            assert_eq!(object.get("type"), Some(&Value::String(kind.clone())));
        }
        Err(ChatError::BadRequest(_)) => {
            let value = value.expect("a bad request is JSON");
            if let Value::Object(object) = &value {
                if let Some(Value::String(kind)) = object.get("type") {
                    assert!(
                        TYPES.contains(&kind.as_str()),
                        "unknown type not reported as such"
                    );
                }
            }
        }
        Err(other) => panic!("the parser gave {other:?}"),
    }
});

/// The connection's field checks, checked against their rules; whether all passed.
fn fields_within_limits(request: &ChatRequest, limits: &Limits) -> bool {
    let room = |room: &str| {
        let ok = check_room(room).is_ok();
        let rule =
            !room.is_empty() && room.len() <= MAX_ROOM && !room.chars().any(char::is_control);
        assert_eq!(ok, rule, "room {room:?}");
        ok
    };
    let nick = |nick: &str| {
        let ok = limits.check_nick(nick).is_ok();
        let rule = nick.chars().count() <= limits.max_nick
            && !nick.trim().is_empty()
            && !nick.chars().any(char::is_control);
        assert_eq!(ok, rule, "nick {nick:?}");
        ok
    };
    match request {
        ChatRequest::Join {
            room: r,
            nick: n,
            since: _,
            epoch,
        } => {
            // An epoch is one the server handed out: short.
            room(r) & n.as_deref().is_none_or(nick) & epoch.as_ref().is_none_or(|e| e.len() <= 64)
        }
        ChatRequest::Leave { room: r } => room(r),
        ChatRequest::Say { room: r, text } => {
            let ok = limits.check_text(text).is_ok();
            assert_eq!(
                ok,
                !text.is_empty() && text.len() <= limits.max_text,
                "text of {} bytes",
                text.len()
            );
            room(r) & ok
        }
        ChatRequest::Nick { nick: n } => nick(n),
        // A token's length is not a chat limit.
        ChatRequest::Refresh { token } => token.len() <= 1024,
    }
}
