//! A per-worker cache of small static files, so that serving a page costs no blocking-pool
//! round trip and no path resolution.
//!
//! An entry is the file's bytes with the metadata they were read with, found through the
//! request path as sent. Every hit is revalidated with one `stat` of the file's canonical path
//! (size, modification time and inode must be unchanged), so a changed file is never served
//! stale, and a file that was replaced or removed is looked up afresh. Only files up to
//! [`MAX_FILE`] bytes are kept, at most [`MAX_TOTAL`] bytes per worker (the cache starts over
//! when full). Each worker has its own cache: no locks on the request path.

use std::{
    cell::RefCell, collections::HashMap, fs::Metadata, os::unix::fs::MetadataExt, path::PathBuf,
    sync::Arc,
};

use bytes::Bytes;

/// Largest file kept in memory (larger files are streamed from disk).
pub const MAX_FILE: u64 = 256 * 1024;

/// Bytes of file contents one worker keeps at most.
const MAX_TOTAL: usize = 32 * 1024 * 1024;

/// A small file, read whole.
pub struct CachedFile {
    /// Where it was found: canonical, inside the static directory.
    pub resolved: PathBuf,
    /// The path as requested (gives the Content-Type).
    pub requested: PathBuf,
    pub metadata: Metadata,
    pub contents: Bytes,
}

impl CachedFile {
    /// Whether the file on disk is still the one that was read.
    fn is_current(&self) -> bool {
        match std::fs::metadata(&self.resolved) {
            Ok(now) => {
                now.len() == self.metadata.len()
                    && now.ino() == self.metadata.ino()
                    && now.dev() == self.metadata.dev()
                    && now.mtime() == self.metadata.mtime()
                    && now.mtime_nsec() == self.metadata.mtime_nsec()
            }
            Err(_) => false,
        }
    }
}

#[derive(Default)]
struct FileCache {
    entries: HashMap<String, Arc<CachedFile>>,
    bytes: usize,
}

thread_local! {
    static CACHE: RefCell<FileCache> = RefCell::default();
}

/// The cached file for this request path, if it is cached and unchanged on disk.
pub fn lookup(request_path: &str) -> Option<Arc<CachedFile>> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let entry = cache.entries.get(request_path)?.clone();
        if entry.is_current() {
            Some(entry)
        } else {
            cache.bytes -= entry.contents.len();
            cache.entries.remove(request_path);
            None
        }
    })
}

/// Keeps a freshly read file for later requests of the same path.
pub fn insert(request_path: &str, file: Arc<CachedFile>) {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let size = file.contents.len();
        if cache.bytes + size > MAX_TOTAL {
            cache.entries.clear();
            cache.bytes = 0;
        }
        cache.bytes += size;
        if let Some(replaced) = cache.entries.insert(request_path.to_owned(), file) {
            cache.bytes -= replaced.contents.len();
        }
    });
}
