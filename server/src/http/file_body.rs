//! Streaming a response body made of file ranges and literal bytes, without ever holding more
//! than one chunk of the file in memory.
//!
//! Reads use `pread` (`FileExt::read_at`) on a shared file handle, so ranges need no seeking
//! state, and run on the blocking thread pool so that a slow disk never stalls a worker's event
//! loop (which also carries its WebSocket sessions). The body's length is known up front from
//! its segments: responses carry an exact `Content-Length` and are never chunked.

use std::{collections::VecDeque, fs::File, io, os::unix::fs::FileExt, sync::Arc};

use actix_web::rt::task::spawn_blocking;
use bytes::Bytes;
use futures_util::{stream, Stream};

/// Bytes read from the file per step. The h1 dispatcher stops polling the body while its write
/// buffer is full, so this is about the most a connection holds of the file at once.
pub const CHUNK_SIZE: u64 = 64 * 1024;

/// One piece of a response body.
#[derive(Debug, Clone)]
pub enum Segment {
    /// Bytes sent as they are (multipart framing).
    Literal(Bytes),
    /// `len` bytes of the file from `offset`.
    File {
        /// Where the bytes start in the file.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
}

impl Segment {
    // Only summed up (`total_len`); nothing asks whether one segment is empty.
    #[allow(clippy::len_without_is_empty)]
    /// The segment's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Segment::Literal(bytes) => bytes.len() as u64,
            Segment::File { len, .. } => *len,
        }
    }
}

/// The exact number of bytes `segments` will produce.
pub fn total_len(segments: &[Segment]) -> u64 {
    segments.iter().map(Segment::len).sum()
}

/// The body as a stream. A file that shrinks while it is being sent ends the stream with an
/// error (the connection is then closed) rather than sending fewer bytes than announced.
pub fn stream(file: File, segments: Vec<Segment>) -> impl Stream<Item = io::Result<Bytes>> {
    let state = (Arc::new(file), VecDeque::from(segments));
    stream::try_unfold(state, |(file, mut segments)| async move {
        loop {
            match segments.pop_front() {
                None => return Ok(None),
                Some(Segment::Literal(bytes)) => return Ok(Some((bytes, (file, segments)))),
                Some(Segment::File { len: 0, .. }) => continue,
                Some(Segment::File { offset, len }) => {
                    let step = len.min(CHUNK_SIZE);
                    if step < len {
                        segments.push_front(Segment::File {
                            offset: offset + step,
                            len: len - step,
                        });
                    }
                    let reader = file.clone();
                    let chunk = spawn_blocking(move || read_chunk(&reader, offset, step))
                        .await
                        .map_err(io::Error::other)??;
                    return Ok(Some((chunk, (file, segments))));
                }
            }
        }
    })
}

fn read_chunk(file: &File, offset: u64, len: u64) -> io::Result<Bytes> {
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;
    use std::io::Write;

    #[actix_web::test]
    async fn streams_segments_in_chunks() {
        let path = std::env::temp_dir().join(format!("file_body_test_{}", std::process::id()));
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        File::create(&path).unwrap().write_all(&data).unwrap();
        let segments = vec![
            Segment::Literal(Bytes::from_static(b"head")),
            Segment::File {
                offset: 10,
                len: 150_000,
            },
            Segment::File { offset: 0, len: 0 },
            Segment::Literal(Bytes::from_static(b"tail")),
        ];
        let expected_len = total_len(&segments);
        let chunks: Vec<Bytes> = stream(File::open(&path).unwrap(), segments)
            .try_collect()
            .await
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(chunks.iter().all(|chunk| chunk.len() as u64 <= CHUNK_SIZE));
        let body: Vec<u8> = chunks.concat();
        assert_eq!(body.len() as u64, expected_len);
        assert_eq!(&body[..4], b"head");
        assert_eq!(&body[4..150_004], &data[10..150_010]);
        assert_eq!(&body[150_004..], b"tail");
    }

    #[actix_web::test]
    async fn a_file_shorter_than_announced_is_an_error() {
        let path = std::env::temp_dir().join(format!("file_body_short_{}", std::process::id()));
        File::create(&path).unwrap().write_all(b"short").unwrap();
        let result: io::Result<Vec<Bytes>> = stream(
            File::open(&path).unwrap(),
            vec![Segment::File { offset: 0, len: 10 }],
        )
        .try_collect()
        .await;
        std::fs::remove_file(&path).unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
