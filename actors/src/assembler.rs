//! Fragments → whole messages, with incremental UTF-8 validation and a size limit.
//!
//! actix-web-actors hands fragmented messages to the actor frame by frame; this turns them back
//! into whole messages. Text is validated as it arrives, so a message whose second fragment is
//! not UTF-8 is refused at once rather than after the (possibly large, possibly never sent) rest.

use actix_http::ws::Item;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::{close::CloseError, message::Message};

/// Reassembles one connection's fragmented messages.
#[derive(Debug)]
pub struct Assembler {
    max_size: usize,
    partial: Option<Partial>,
}

#[derive(Debug)]
struct Partial {
    is_text: bool,
    data: BytesMut,
    /// Prefix of `data` known to be valid UTF-8 (text only).
    utf8_valid_up_to: usize,
}

impl Assembler {
    pub fn new(max_size: usize) -> Assembler {
        Assembler {
            max_size,
            partial: None,
        }
    }

    /// Whether a fragmented message is being reassembled.
    pub fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// Takes one continuation item; returns the message once its last fragment has arrived.
    pub fn push(&mut self, item: Item) -> Result<Option<Message>, CloseError> {
        match item {
            Item::FirstText(data) => self.start(true, data).map(|()| None),
            Item::FirstBinary(data) => self.start(false, data).map(|()| None),
            Item::Continue(data) => self.append(data).map(|()| None),
            Item::Last(data) => {
                self.append(data)?;
                self.finish().map(Some)
            }
        }
    }

    fn start(&mut self, is_text: bool, data: Bytes) -> Result<(), CloseError> {
        if self.partial.is_some() {
            return Err(CloseError::Protocol(
                "new data frame inside a fragmented message".into(),
            ));
        }
        self.partial = Some(Partial {
            is_text,
            data: BytesMut::new(),
            utf8_valid_up_to: 0,
        });
        self.append(data)
    }

    fn append(&mut self, data: Bytes) -> Result<(), CloseError> {
        let Some(partial) = self.partial.as_mut() else {
            return Err(CloseError::Protocol(
                "continuation frame with nothing to continue".into(),
            ));
        };
        if partial.data.len() + data.len() > self.max_size {
            self.partial = None;
            return Err(CloseError::TooBig);
        }
        partial.data.extend_from_slice(&data);
        if partial.is_text {
            match std::str::from_utf8(&partial.data[partial.utf8_valid_up_to..]) {
                Ok(_) => partial.utf8_valid_up_to = partial.data.len(),
                // An error with no length is a character cut at the end: the next fragment
                // may complete it.
                Err(err) if err.error_len().is_none() => {
                    partial.utf8_valid_up_to += err.valid_up_to()
                }
                Err(_) => {
                    self.partial = None;
                    return Err(CloseError::InvalidUtf8);
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Message, CloseError> {
        let partial = self
            .partial
            .take()
            .expect("append checked a message is in progress");
        let data = partial.data.freeze();
        if !partial.is_text {
            return Ok(Message::Binary(data));
        }
        if partial.utf8_valid_up_to != data.len() {
            return Err(CloseError::InvalidUtf8);
        }
        // SAFETY: every byte of `data` was validated as UTF-8 by `append`.
        Ok(Message::Text(unsafe {
            ByteString::from_bytes_unchecked(data)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(data: &[u8]) -> Bytes {
        Bytes::copy_from_slice(data)
    }

    #[test]
    fn reassembles_text_split_inside_a_character() {
        let mut asm = Assembler::new(1024);
        let euro = "€".as_bytes();
        assert_eq!(asm.push(Item::FirstText(b(&euro[..1]))), Ok(None));
        assert_eq!(asm.push(Item::Continue(b(&euro[1..2]))), Ok(None));
        assert_eq!(
            asm.push(Item::Last(b(&euro[2..]))),
            Ok(Some(Message::Text("€".into())))
        );
        assert!(!asm.in_progress());
    }

    #[test]
    fn invalid_utf8_fails_before_the_last_fragment() {
        let mut asm = Assembler::new(1024);
        assert_eq!(asm.push(Item::FirstText(b(b"hello"))), Ok(None));
        assert_eq!(
            asm.push(Item::Continue(b(&[0xce, 0xba, 0xff]))),
            Err(CloseError::InvalidUtf8)
        );
    }

    #[test]
    fn a_truncated_character_at_the_end_is_invalid() {
        let mut asm = Assembler::new(1024);
        asm.push(Item::FirstText(b(b"ok"))).unwrap();
        assert_eq!(
            asm.push(Item::Last(b(&[0xe2, 0x82]))),
            Err(CloseError::InvalidUtf8)
        );
    }

    #[test]
    fn size_limit_counts_all_fragments() {
        let mut asm = Assembler::new(10);
        asm.push(Item::FirstBinary(b(&[0; 6]))).unwrap();
        assert_eq!(asm.push(Item::Last(b(&[0; 5]))), Err(CloseError::TooBig));
    }

    #[test]
    fn continuation_without_start_is_a_protocol_error() {
        let mut asm = Assembler::new(10);
        assert!(matches!(
            asm.push(Item::Continue(b(b"x"))),
            Err(CloseError::Protocol(_))
        ));
    }

    #[test]
    fn binary_is_not_validated() {
        let mut asm = Assembler::new(10);
        asm.push(Item::FirstBinary(b(&[0xff]))).unwrap();
        assert_eq!(
            asm.push(Item::Last(b(&[0xfe]))),
            Ok(Some(Message::Binary(b(&[0xff, 0xfe]))))
        );
    }
}
