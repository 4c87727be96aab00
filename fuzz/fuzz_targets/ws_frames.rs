//! The frame guard and the message assembler of a WebSocket connection.
//!
//! Frame guard: any byte stream, cut into any chunks, passes through unchanged until the chunk
//! that completes the header of the first frame declaring more than the limit; that chunk is
//! replaced by an overflow error and the stream ends. Checked against a reference that reads
//! the headers from the whole stream at once.
//!
//! Compressed messages (permessage-deflate): see [`compressed`].
//!
//! Assembler: a message sent in any fragments comes out equal to what was sent; one over the
//! limit is refused as too big at the fragment that passes it; text that is valid UTF-8 is
//! accepted wherever it is cut, and invalid text is refused at the first fragment after which
//! no continuation could make it valid. Misplaced frames are protocol errors, and the
//! assembler is ready for the next message after any refusal.
#![no_main]

use std::{
    pin::Pin,
    task::{Context, Poll, Waker},
};

use actix_http::{error::PayloadError, ws::Item};
use bytes::Bytes;
use futures_util::{stream, Stream};
use libfuzzer_sys::{
    arbitrary::{self, Unstructured},
    fuzz_target,
};
use switchboard_actors::{
    assembler::Assembler, close::CloseError, frame_guard::FrameGuard, Message,
};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    match u.int_in_range(0u8..=2) {
        Ok(0) => frame_guard(&mut u),
        Ok(1) => assembler(&mut u),
        Ok(_) => compressed(&mut u),
        Err(_) => {}
    }
});

/// A compressed message (RSV1 on its first frame), in any fragments: arbitrary bytes, or a
/// valid deflate stream of arbitrary data. Whatever comes in, the assembler answers a message of
/// at most `max` bytes or refuses it as corrupt, too big or (text) not UTF-8; a valid stream of
/// data within the limit comes out equal to the data.
fn compressed(u: &mut Unstructured) {
    let (Ok(max), Ok(is_text), Ok(valid)) = (
        u.int_in_range(0usize..=4096),
        u.arbitrary::<bool>(),
        u.arbitrary::<bool>(),
    ) else {
        return;
    };
    let original: Vec<u8> = u.arbitrary().unwrap_or_default();
    let wire = if valid {
        deflate(&original)
    } else {
        original.clone()
    };
    let mut assembler = Assembler::new(max);
    let mut rest = &wire[..];
    let mut first = true;
    let outcome = loop {
        // With the fuzzer's input used up, the rest goes as one piece (an empty input would
        // otherwise cut empty pieces forever).
        let take = if u.is_empty() {
            rest.len()
        } else {
            u.int_in_range(0..=rest.len()).unwrap_or(rest.len())
        };
        let (piece, after) = rest.split_at(take);
        rest = after;
        let piece = Bytes::copy_from_slice(piece);
        let item = match (first, rest.is_empty()) {
            (true, _) if is_text => Item::FirstText(piece),
            (true, _) => Item::FirstBinary(piece),
            (false, true) => Item::Last(piece),
            (false, false) => Item::Continue(piece),
        };
        let result = assembler.push(item, first);
        first = false;
        match result {
            Err(err) => break Err(err),
            Ok(None) if rest.is_empty() => {
                break assembler
                    .push(Item::Last(Bytes::new()), false)
                    .map(Option::unwrap)
            }
            Ok(None) => {}
            Ok(Some(message)) => break Ok(message),
        }
    };
    match outcome {
        Ok(message) => {
            let bytes: &[u8] = match &message {
                Message::Text(text) => text.as_bytes(),
                Message::Binary(data) => data,
            };
            assert!(
                bytes.len() <= max,
                "{} bytes past the limit {max}",
                bytes.len()
            );
            if valid {
                assert_eq!(bytes, &original[..], "a valid stream inflates to its data");
            }
        }
        Err(CloseError::TooBig) if valid => {
            assert!(
                original.len() > max,
                "valid data within the limit was refused"
            )
        }
        Err(CloseError::BadCompression) if valid => panic!("a valid deflate stream was refused"),
        Err(CloseError::BadCompression | CloseError::TooBig) => {}
        Err(CloseError::InvalidUtf8) => {
            assert!(is_text);
            if valid {
                assert!(
                    std::str::from_utf8(&original).is_err(),
                    "valid text was refused"
                );
            }
        }
        Err(other) => panic!("unexpected refusal of a compressed message: {other:?}"),
    }
}

/// A message compressed as RFC 7692 says: raw deflate, sync flush, the 4-byte trailer removed.
fn deflate(data: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut raw = Compress::new(Compression::fast(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let consumed = raw.total_in() as usize;
        raw.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .expect("deflate");
        if raw.total_in() as usize == data.len() && out.ends_with(&[0, 0, 0xff, 0xff]) {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    out.truncate(out.len() - 4);
    out
}

/// Where the reference sees the first over-long frame's header end: the index of its last byte.
fn reference_trip(bytes: &[u8], max_frame: u64) -> Option<usize> {
    let mut at = 0usize;
    while at < bytes.len() {
        if at + 2 > bytes.len() {
            return None;
        }
        let short = bytes[at + 1] & 0x7f;
        let masked = bytes[at + 1] & 0x80 != 0;
        let extended = match short {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header = 2 + extended + if masked { 4 } else { 0 };
        if at + header > bytes.len() {
            return None;
        }
        let length = match short {
            126 => u64::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])),
            127 => u64::from_be_bytes(bytes[at + 2..at + 10].try_into().unwrap()),
            n => u64::from(n),
        };
        if length > max_frame {
            return Some(at + header - 1);
        }
        let end = (at + header) as u64 + length;
        if end >= bytes.len() as u64 {
            return None;
        }
        at = end as usize;
    }
    None
}

/// A frame header (client frames are masked; some are not, which the guard must still follow).
fn push_header(out: &mut Vec<u8>, u: &mut Unstructured, len: u64) -> arbitrary::Result<()> {
    out.push(u.arbitrary::<u8>()? & 0x8f);
    let masked = u.ratio(7, 8)?;
    let mask_bit = if masked { 0x80 } else { 0 };
    // The shortest encoding usually, a longer one sometimes (legal for the guard to follow).
    let form: u8 = u.int_in_range(0..=9)?;
    if len < 126 && form < 8 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xffff && form < 9 {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if masked {
        out.extend_from_slice(&u.arbitrary::<[u8; 4]>()?);
    }
    Ok(())
}

fn frame_guard(u: &mut Unstructured) {
    let Ok(max_frame) = u.int_in_range(0u64..=300) else {
        return;
    };
    let mut bytes = Vec::new();
    let structured = u.arbitrary::<bool>().unwrap_or(false);
    if structured {
        // Well-formed frames, now and then one declaring far more than the limit.
        while let Ok(true) = u.arbitrary::<bool>() {
            let len = match u.int_in_range(0u8..=9) {
                Ok(0) => u.arbitrary::<u64>().unwrap_or(u64::MAX),
                Ok(1) => max_frame + 1,
                Ok(2) => max_frame,
                _ => u.int_in_range(0..=max_frame.min(200)).unwrap_or(0),
            };
            if push_header(&mut bytes, u, len).is_err() {
                break;
            }
            if len <= max_frame {
                let payload = u.bytes(len as usize).unwrap_or(&[]);
                bytes.extend_from_slice(payload);
            }
        }
    } else {
        let len = u.arbitrary_len::<u8>().unwrap_or(0);
        bytes.extend_from_slice(u.bytes(len).unwrap_or(&[]));
    }
    let chunks = cut(u, &bytes);
    let expected_trip = reference_trip(&bytes, max_frame);

    let input = stream::iter(
        chunks
            .iter()
            .cloned()
            .map(Ok::<Bytes, PayloadError>)
            .collect::<Vec<_>>(),
    );
    let mut guard = FrameGuard::new(input, max_frame as usize);
    let mut cx = Context::from_waker(Waker::noop());
    let mut offset = 0usize;
    let mut index = 0usize;
    loop {
        match Pin::new(&mut guard).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                assert_eq!(chunk, chunks[index], "a chunk was changed");
                if let Some(trip) = expected_trip {
                    assert!(
                        trip >= offset + chunk.len(),
                        "a frame over {max_frame} bytes was let through (header ends at {trip})"
                    );
                }
                offset += chunk.len();
                index += 1;
            }
            Poll::Ready(Some(Err(err))) => {
                assert!(matches!(err, PayloadError::Overflow));
                let trip = expected_trip.expect("tripped on a stream with no over-long frame");
                assert!(
                    (offset..offset + chunks[index].len()).contains(&trip),
                    "tripped at the chunk at {offset}, the header ends at {trip}"
                );
                assert!(matches!(
                    Pin::new(&mut guard).poll_next(&mut cx),
                    Poll::Ready(None)
                ));
                return;
            }
            Poll::Ready(None) => break,
            Poll::Pending => panic!("a ready input made the guard wait"),
        }
    }
    assert_eq!(index, chunks.len());
    assert_eq!(expected_trip, None, "an over-long frame was not refused");
}

/// `bytes` cut into chunks of arbitrary sizes (empty ones included).
fn cut(u: &mut Unstructured, bytes: &[u8]) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        // An exhausted input gives zeros: then the rest is one chunk.
        if u.is_empty() {
            chunks.push(Bytes::copy_from_slice(rest));
            break;
        }
        let size = match u.int_in_range(0usize..=12) {
            Ok(0) => 0,
            Ok(n) if n <= 8 => n,
            Ok(_) => u.int_in_range(0..=rest.len()).unwrap_or(rest.len()),
            Err(_) => rest.len(),
        };
        let (chunk, after) = rest.split_at(size.min(rest.len()));
        chunks.push(Bytes::copy_from_slice(chunk));
        rest = after;
    }
    chunks
}

/// What the assembler must answer after each fragment of a message.
#[derive(Debug, PartialEq)]
enum Expect {
    More,
    Done,
    TooBig,
    InvalidUtf8,
}

/// The reference: after a fragment that ends at `end` (whole message `data`).
fn expect(data: &[u8], end: usize, last: bool, is_text: bool, max: usize) -> Expect {
    if end > max {
        return Expect::TooBig;
    }
    if is_text {
        match std::str::from_utf8(&data[..end]) {
            Err(err) if err.error_len().is_some() => return Expect::InvalidUtf8,
            Err(_) if last => return Expect::InvalidUtf8,
            _ => {}
        }
    }
    if last {
        Expect::Done
    } else {
        Expect::More
    }
}

fn assembler(u: &mut Unstructured) {
    let Ok(max) = u.int_in_range(0usize..=256) else {
        return;
    };
    let mut assembler = Assembler::new(max);
    for _ in 0..4 {
        let Ok(kind) = u.int_in_range(0u8..=9) else {
            return;
        };
        // Misplaced frames, now and then.
        if kind == 0 {
            let item = Item::Continue(Bytes::from_static(b"x"));
            let was_in_progress = assembler.in_progress();
            let result = assembler.push(item, false);
            if !was_in_progress {
                assert!(matches!(result, Err(CloseError::Protocol(_))));
            }
            // In the middle of a message, this is an ordinary fragment of it; start afresh.
            assembler = Assembler::new(max);
            continue;
        }
        let is_text = kind < 7;
        let data: Vec<u8> = if is_text && u.arbitrary::<bool>().unwrap_or(false) {
            // Mostly valid text, with multi-byte characters to cut.
            u.arbitrary::<String>().unwrap_or_default().into_bytes()
        } else {
            let len = u.arbitrary_len::<u8>().unwrap_or(0);
            u.bytes(len).unwrap_or(&[]).to_vec()
        };
        let mut cuts: Vec<usize> = Vec::new();
        while let Ok(true) = u.arbitrary::<bool>() {
            cuts.push(u.int_in_range(0..=data.len()).unwrap_or(0));
            if cuts.len() > 64 {
                break;
            }
        }
        cuts.sort_unstable();
        cuts.push(data.len());
        let mut start = 0;
        let mut outcome = None;
        for (i, &end) in cuts.iter().enumerate() {
            let last = i + 1 == cuts.len();
            let piece = Bytes::copy_from_slice(&data[start..end]);
            let item = match (i, last) {
                (0, true) => {
                    // A whole message in one frame never reaches the assembler; a lone
                    // fragmented one (first then last, empty) does.
                    if is_text {
                        Item::FirstText(piece)
                    } else {
                        Item::FirstBinary(piece)
                    }
                }
                (0, false) if is_text => Item::FirstText(piece),
                (0, false) => Item::FirstBinary(piece),
                (_, true) => Item::Last(piece),
                (_, false) => Item::Continue(piece),
            };
            let one_fragment = i == 0 && last;
            let want = expect(&data, end, last && !one_fragment, is_text, max);
            let got = assembler.push(item, false);
            match (&want, got) {
                (Expect::More, Ok(None)) => {}
                (Expect::Done, Ok(Some(message))) => {
                    let (bytes, text) = match message {
                        Message::Text(text) => (text.as_bytes().to_vec(), true),
                        Message::Binary(bytes) => (bytes.to_vec(), false),
                    };
                    assert_eq!(text, is_text, "the message changed type");
                    assert_eq!(bytes, data, "the reassembled message differs from the sent one");
                }
                (Expect::TooBig, Err(CloseError::TooBig)) => {}
                (Expect::InvalidUtf8, Err(CloseError::InvalidUtf8)) => {}
                (want, got) => panic!(
                    "fragment {i} (..{end} of {} bytes, text {is_text}, max {max}): expected {want:?}, got {got:?}",
                    data.len()
                ),
            }
            if want != Expect::More {
                outcome = Some(want);
                break;
            }
            if one_fragment {
                // A first fragment that is also the last cut: close the message with an empty
                // last fragment.
                let want = expect(&data, end, true, is_text, max);
                let got = assembler.push(Item::Last(Bytes::new()), false);
                match (&want, got) {
                    (Expect::Done, Ok(Some(message))) => {
                        let bytes = match message {
                            Message::Text(text) => text.as_bytes().to_vec(),
                            Message::Binary(bytes) => bytes.to_vec(),
                        };
                        assert_eq!(bytes, data);
                    }
                    (Expect::InvalidUtf8, Err(CloseError::InvalidUtf8)) => {}
                    (want, got) => panic!("closing fragment: expected {want:?}, got {got:?}"),
                }
                outcome = Some(want);
                break;
            }
            start = end;
        }
        assert!(outcome.is_some());
        assert!(
            !assembler.in_progress(),
            "a finished or refused message left state behind"
        );
        // A new data frame in the middle of a message is a protocol error.
        if u.ratio(1, 8).unwrap_or(false) {
            assembler
                .push(Item::FirstBinary(Bytes::new()), false)
                .unwrap();
            assert!(matches!(
                assembler.push(Item::FirstText(Bytes::new()), false),
                Err(CloseError::Protocol(_))
            ));
            assembler = Assembler::new(max);
        }
    }
}
