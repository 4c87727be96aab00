//! The multipart upload parser: actix-multipart as `POST /upload` drives it, and our own part
//! of the parsing (the file name as sent, and the name a part is stored under).
//!
//! A well-formed body of arbitrary parts, cut into arbitrary chunks, parses back into exactly
//! those parts: names, file names and contents. Any body (well-formed or not) ends in parts or
//! an error, never in a stall with the whole input available. Every stored name is safe: not
//! empty, at most `MAX_NAME` bytes, no path separator, no control character, no leading dot or
//! surrounding white space, and sanitizing it again changes nothing.
#![no_main]

use std::{
    future::Future,
    pin::pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
};

use actix_http::error::PayloadError;
use actix_multipart::Multipart;
use actix_web::http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};
use switchboard::fuzzing::{part_file_name, sanitize_file_name, MAX_NAME};

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs a future whose input is all there: a `Pending` that asked for no wake-up is a stall.
fn run<F: Future>(future: F) -> F::Output {
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        let before = counter.0.load(Ordering::Relaxed);
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => assert!(
                counter.0.load(Ordering::Relaxed) > before,
                "the parser waits for input it already has"
            ),
        }
    }
}

struct Part {
    name: String,
    file_name: Option<String>,
    content: Vec<u8>,
}

fn check_stored_name(sent: &str) {
    let stored = sanitize_file_name(sent);
    assert!(!stored.is_empty());
    assert!(stored.len() <= MAX_NAME, "{} bytes", stored.len());
    assert!(!stored.contains(['/', '\\']), "{stored:?} from {sent:?}");
    assert!(!stored.chars().any(char::is_control), "{stored:?}");
    assert!(!stored.starts_with('.'), "hidden: {stored:?} from {sent:?}");
    assert_eq!(
        stored.trim(),
        stored,
        "white space around {stored:?} (from {sent:?})"
    );
    assert_eq!(
        sanitize_file_name(&stored),
        stored,
        "not idempotent on {sent:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(well_formed) = u.arbitrary::<bool>() else {
        return;
    };
    // A file name as a client may send one, checked on its own too.
    if let Ok(name) = u.arbitrary::<String>() {
        check_stored_name(&name);
    }
    let boundary_len = u.int_in_range(1usize..=70).unwrap_or(1);
    let boundary: String = (0..boundary_len)
        .map(|_| {
            const BCHARS: &[u8] =
                b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?";
            char::from(*u.choose(BCHARS).unwrap_or(&b'x'))
        })
        .collect();
    let mut parts = Vec::new();
    let body = if well_formed {
        let mut body = Vec::new();
        while let Ok(true) = u.arbitrary::<bool>() {
            let name_len = u.int_in_range(1usize..=12).unwrap_or(1);
            let name: String = (0..name_len)
                .map(|_| char::from(u.int_in_range(b'a'..=b'z').unwrap_or(b'a')))
                .collect();
            let file_name = if u.arbitrary::<bool>().unwrap_or(false) {
                Some(u.arbitrary::<String>().unwrap_or_default())
            } else {
                None
            };
            let len = u.arbitrary_len::<u8>().unwrap_or(0);
            let content = u.bytes(len).unwrap_or(&[]).to_vec();
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"").as_bytes(),
            );
            if let Some(file_name) = &file_name {
                if file_name.chars().any(|c| c.is_ascii_control()) {
                    return;
                }
                let quoted = file_name.replace('\\', "\\\\").replace('"', "\\\"");
                body.extend_from_slice(format!("; filename=\"{quoted}\"").as_bytes());
            }
            body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n\r\n");
            let delimiter = format!("\r\n--{boundary}");
            // actix-multipart also ends a part at a bare CR before `--boundary` (RFC 2046
            // wants CRLF), so such content cannot be sent either.
            let bare_cr_delimiter = format!("\r--{boundary}");
            if content
                .windows(delimiter.len())
                .any(|window| window == delimiter.as_bytes())
                || content
                    .windows(bare_cr_delimiter.len())
                    .any(|window| window == bare_cr_delimiter.as_bytes())
                || (content.len() + 2 >= delimiter.len() && {
                    // The delimiter may also start inside the content and end in the framing.
                    let mut tail = content.clone();
                    tail.extend_from_slice(delimiter.as_bytes());
                    tail.windows(delimiter.len())
                        .position(|window| window == delimiter.as_bytes())
                        != Some(content.len())
                })
            {
                return;
            }
            body.extend_from_slice(&content);
            body.extend_from_slice(b"\r\n");
            parts.push(Part {
                name,
                file_name,
                content,
            });
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        body
    } else {
        let len = u.arbitrary_len::<u8>().unwrap_or(0);
        u.bytes(len).unwrap_or(&[]).to_vec()
    };
    let mut chunks = Vec::new();
    let mut rest: &[u8] = &body;
    while !rest.is_empty() {
        let size = u
            .int_in_range(1usize..=rest.len().min(64))
            .unwrap_or(rest.len());
        let size = if u.is_empty() { rest.len() } else { size };
        chunks.push(Ok::<Bytes, PayloadError>(Bytes::copy_from_slice(
            &rest[..size],
        )));
        rest = &rest[size..];
    }
    let mut headers = HeaderMap::new();
    let content_type = format!("multipart/form-data; boundary=\"{boundary}\"");
    headers.insert(CONTENT_TYPE, HeaderValue::from_str(&content_type).unwrap());
    let mut multipart = Multipart::new(&headers, stream::iter(chunks));

    let mut parsed = 0usize;
    let outcome: Result<(), String> = run(async {
        while let Some(field) = multipart.next().await {
            let mut field = field.map_err(|err| err.to_string())?;
            let file_name = part_file_name(&field);
            if let Some(file_name) = &file_name {
                check_stored_name(file_name);
            }
            let mut content = Vec::new();
            while let Some(chunk) = field.next().await {
                content.extend_from_slice(&chunk.map_err(|err| err.to_string())?);
            }
            if well_formed {
                let part = parts.get(parsed).expect("more parts than were sent");
                assert_eq!(field.name(), Some(part.name.as_str()));
                assert_eq!(content, part.content, "part {parsed}'s content changed");
                match &part.file_name {
                    None => assert_eq!(file_name, None),
                    Some(sent)
                        if sent.is_ascii()
                            && !sent.contains(['"', '\\', ';'])
                            && !sent.chars().any(|c| c.is_ascii_control()) =>
                    {
                        assert_eq!(
                            file_name.as_deref(),
                            Some(sent.as_str()),
                            "file name changed"
                        )
                    }
                    Some(_) => {}
                }
            }
            parsed += 1;
        }
        Ok(())
    });
    if well_formed {
        outcome.expect("a well-formed body was refused");
        assert_eq!(parsed, parts.len(), "parts were lost");
    }
});
