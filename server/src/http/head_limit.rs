//! `--max-head`: requests whose head (request line and headers) is larger get 431.
//!
//! actix-http refuses heads over its fixed 128 KiB buffer by itself; this applies the
//! configured, smaller limit to what it has parsed. The head is counted as it was on the wire:
//! request line, each `name: value` line, and the line ends.

use actix_web::dev::RequestHead;

use super::request_error::RequestError;

/// The error for a head over `max` bytes, if it is.
pub fn check(head: &RequestHead, max: usize) -> Result<(), RequestError> {
    let request_line = head.method.as_str().len() + 1 + head.uri.to_string().len() + 1 + 8 + 2;
    let headers: usize = head
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    if request_line + headers + 2 > max {
        Err(RequestError::HeadTooLarge { limit: max })
    } else {
        Ok(())
    }
}
