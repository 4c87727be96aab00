//! Fragments → whole messages, with incremental UTF-8 validation and a size limit.
//!
//! actix-web-actors hands fragmented messages to the actor frame by frame; this turns them back
//! into whole messages. Text is validated as it arrives, so a message whose second fragment is
//! not UTF-8 is refused at once rather than after the (possibly large, possibly never sent) rest.
//! A compressed message (permessage-deflate) is inflated fragment by fragment, and the size
//! limit applies to what it inflates to.

use actix_http::ws::Item;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::{close::CloseError, deflate::Inflater, message::Message};

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
    /// The message is compressed: fragments go through this (one per message).
    inflater: Option<Inflater>,
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

    /// A message that came whole, in one frame (`compressed`: its RSV1 was set).
    pub fn whole(
        &mut self,
        is_text: bool,
        compressed: bool,
        data: Bytes,
    ) -> Result<Message, CloseError> {
        if !compressed {
            return if is_text {
                ByteString::try_from(data)
                    .map(Message::Text)
                    .map_err(|_| CloseError::InvalidUtf8)
            } else {
                Ok(Message::Binary(data))
            };
        }
        self.start(is_text, true, data)?;
        self.finish()
    }

    /// Takes one continuation item; returns the message once its last fragment has arrived.
    /// `compressed` (RSV1) counts on a first fragment only: it says the whole message is.
    pub fn push(&mut self, item: Item, compressed: bool) -> Result<Option<Message>, CloseError> {
        match item {
            Item::FirstText(data) => self.start(true, compressed, data).map(|()| None),
            Item::FirstBinary(data) => self.start(false, compressed, data).map(|()| None),
            Item::Continue(data) => self.append(data).map(|()| None),
            Item::Last(data) => {
                self.append(data)?;
                self.finish().map(Some)
            }
        }
    }

    fn start(&mut self, is_text: bool, compressed: bool, data: Bytes) -> Result<(), CloseError> {
        if self.partial.is_some() {
            return Err(CloseError::Protocol(
                "new data frame inside a fragmented message".into(),
            ));
        }
        self.partial = Some(Partial {
            is_text,
            data: BytesMut::new(),
            utf8_valid_up_to: 0,
            inflater: compressed.then(|| Inflater::new(self.max_size)),
        });
        self.append(data)
    }

    fn append(&mut self, data: Bytes) -> Result<(), CloseError> {
        let Some(partial) = self.partial.as_mut() else {
            return Err(CloseError::Protocol(
                "continuation frame with nothing to continue".into(),
            ));
        };
        if let Some(inflater) = partial.inflater.as_mut() {
            if let Err(err) = inflater.push(&data, &mut partial.data) {
                self.partial = None;
                return Err(err.into());
            }
        } else if partial.data.len() + data.len() > self.max_size {
            self.partial = None;
            return Err(CloseError::TooBig);
        } else {
            partial.data.extend_from_slice(&data);
        }
        self.validate_new_text()
    }

    /// Checks the text added since the last check (a character cut at the end may be completed
    /// by what comes next).
    fn validate_new_text(&mut self) -> Result<(), CloseError> {
        let Some(partial) = self.partial.as_mut() else {
            return Ok(());
        };
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
            .as_mut()
            .expect("append checked a message is in progress");
        if let Some(mut inflater) = partial.inflater.take() {
            if let Err(err) = inflater.finish(&mut partial.data) {
                self.partial = None;
                return Err(err.into());
            }
            self.validate_new_text()?;
        }
        let partial = self.partial.take().expect("still in progress");
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
        assert_eq!(asm.push(Item::FirstText(b(&euro[..1])), false), Ok(None));
        assert_eq!(asm.push(Item::Continue(b(&euro[1..2])), false), Ok(None));
        assert_eq!(
            asm.push(Item::Last(b(&euro[2..])), false),
            Ok(Some(Message::Text("€".into())))
        );
        assert!(!asm.in_progress());
    }

    #[test]
    fn invalid_utf8_fails_before_the_last_fragment() {
        let mut asm = Assembler::new(1024);
        assert_eq!(asm.push(Item::FirstText(b(b"hello")), false), Ok(None));
        assert_eq!(
            asm.push(Item::Continue(b(&[0xce, 0xba, 0xff])), false),
            Err(CloseError::InvalidUtf8)
        );
    }

    #[test]
    fn a_truncated_character_at_the_end_is_invalid() {
        let mut asm = Assembler::new(1024);
        asm.push(Item::FirstText(b(b"ok")), false).unwrap();
        assert_eq!(
            asm.push(Item::Last(b(&[0xe2, 0x82])), false),
            Err(CloseError::InvalidUtf8)
        );
    }

    #[test]
    fn size_limit_counts_all_fragments() {
        let mut asm = Assembler::new(10);
        asm.push(Item::FirstBinary(b(&[0; 6])), false).unwrap();
        assert_eq!(
            asm.push(Item::Last(b(&[0; 5])), false),
            Err(CloseError::TooBig)
        );
    }

    #[test]
    fn continuation_without_start_is_a_protocol_error() {
        let mut asm = Assembler::new(10);
        assert!(matches!(
            asm.push(Item::Continue(b(b"x")), false),
            Err(CloseError::Protocol(_))
        ));
    }

    #[test]
    fn binary_is_not_validated() {
        let mut asm = Assembler::new(10);
        asm.push(Item::FirstBinary(b(&[0xff])), false).unwrap();
        assert_eq!(
            asm.push(Item::Last(b(&[0xfe])), false),
            Ok(Some(Message::Binary(b(&[0xff, 0xfe]))))
        );
    }
}
