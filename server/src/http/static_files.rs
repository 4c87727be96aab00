//! Static files from `--static-dir`: GET and HEAD, with conditional requests (RFC 7232) and byte
//! ranges (RFC 7233).
//!
//! This module only orchestrates; each rule lives in its own module:
//! [`safe_path`](super::safe_path) decides which file a path may name,
//! [`conditional`](super::conditional) answers 304 and If-Range,
//! [`ranges`](super::ranges) decides between 200, 206 and 416,
//! [`byteranges`](super::byteranges) lays out multipart bodies, and
//! [`file_body`](super::file_body) streams them, and [`file_cache`](super::file_cache) keeps
//! small files in memory (revalidated on every request).
//!
//! A directory is served through its `index.html`. Asked for without its trailing slash it is
//! redirected (301) to the slash form first, as nginx and Apache do, so that relative links in
//! the index resolve inside the directory.

use std::{
    fs::{File, Metadata, OpenOptions},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use actix_web::{
    http::{
        header::{self, HeaderMap, HeaderValue},
        Method, StatusCode,
    },
    web, HttpRequest, HttpResponse, HttpResponseBuilder,
};

use bytes::Bytes;

use super::{
    byteranges::Multipart,
    conditional::{self, Validators},
    error::StaticError,
    file_body::{self, Segment},
    file_cache::{self, CachedFile},
    ranges::{self, RangePlan},
    safe_path::{self, RequestPath},
};
use crate::hub::HubError;

/// The static directory, resolved once at start-up.
pub struct StaticFiles {
    pub root: PathBuf,
    /// The Cache-Control value; left out (with a warning at start-up) when it is not a valid
    /// header value, rather than failing every response.
    pub cache_control: String,
}

impl StaticFiles {
    pub fn open(dir: &Path, cache_control: &str) -> Result<StaticFiles, HubError> {
        let root = dir.canonicalize().map_err(|source| HubError::StaticDir {
            path: dir.display().to_string(),
            source,
        })?;
        if !root.is_dir() {
            return Err(HubError::StaticDirNotDir(dir.display().to_string()));
        }
        if HeaderValue::from_str(cache_control).is_err() {
            log::warn!("--cache-control {cache_control:?} is not a valid header value; not sent");
        }
        Ok(StaticFiles {
            root,
            cache_control: cache_control.to_owned(),
        })
    }
}

/// The handler for every path no other route claimed.
pub async fn serve(
    req: HttpRequest,
    files: web::Data<StaticFiles>,
) -> Result<HttpResponse, StaticError> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return Err(StaticError::MethodNotAllowed),
    };
    if let Some(cached) = file_cache::lookup(req.uri().path()) {
        return respond(&req, &files, Found::Cached(cached), head);
    }
    let path = safe_path::parse(req.uri().path())?;
    let dir = files.clone();
    // File-system calls block; keep them off the worker's event loop.
    let target = web::block(move || find(&dir.root, &path))
        .await
        .map_err(|err| StaticError::Io(std::io::Error::other(err)))??;
    let found = match target {
        Target::File(found) => found,
        Target::Directory(mut location) => {
            if let Some(query) = req.uri().query() {
                location.push('?');
                location.push_str(query);
            }
            return Ok(HttpResponse::MovedPermanently()
                .insert_header((header::LOCATION, location))
                .finish());
        }
    };
    if let Found::Cached(cached) = &found {
        file_cache::insert(req.uri().path(), cached.clone());
    }
    respond(&req, &files, found, head)
}

/// A regular file: opened (large files are streamed from it), or read whole (small files).
enum Found {
    Opened {
        file: File,
        metadata: Metadata,
        /// The path as requested (relative to the root, `index.html` added for a directory):
        /// its extension gives the Content-Type, even when a symlink points to a differently
        /// named file.
        requested: PathBuf,
    },
    Cached(Arc<CachedFile>),
}

impl Found {
    fn metadata(&self) -> &Metadata {
        match self {
            Found::Opened { metadata, .. } => metadata,
            Found::Cached(cached) => &cached.metadata,
        }
    }

    fn requested(&self) -> &Path {
        match self {
            Found::Opened { requested, .. } => requested,
            Found::Cached(cached) => &cached.requested,
        }
    }

    /// The response body for these segments (HEAD: none).
    fn body(self, segments: Vec<Segment>) -> BodyStream {
        match self {
            Found::Opened { file, .. } => Box::pin(file_body::stream(file, segments)),
            Found::Cached(cached) => {
                let parts: Vec<std::io::Result<Bytes>> = segments
                    .into_iter()
                    .map(|segment| match segment {
                        Segment::Literal(bytes) => Ok(bytes),
                        Segment::File { offset, len } => Ok(cached
                            .contents
                            .slice(offset as usize..(offset + len) as usize)),
                    })
                    .collect();
                Box::pin(futures_util::stream::iter(parts))
            }
        }
    }
}

type BodyStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>>>>;

enum Target {
    File(Found),
    /// A directory asked for without its trailing slash: redirect here.
    Directory(String),
}

/// Resolves a request path to an open file (blocking).
fn find(root: &Path, path: &RequestPath) -> Result<Target, StaticError> {
    let mut requested = path.relative();
    let mut resolved = safe_path::resolve(root, &requested)?;
    if std::fs::metadata(&resolved)?.is_dir() {
        if !path.trailing_slash {
            return Ok(Target::Directory(path.with_trailing_slash()));
        }
        requested.push("index.html");
        resolved = safe_path::resolve(root, &requested)?;
    } else if path.trailing_slash {
        // `/file.txt/` names a directory that does not exist.
        return Err(StaticError::NotFound);
    }
    // `resolved` is canonical; O_NOFOLLOW refuses a symlink swapped in since, and O_NONBLOCK
    // keeps a FIFO from blocking the open (it is then refused as not a regular file).
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&resolved)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(StaticError::NotFound);
    }
    if metadata.len() <= file_cache::MAX_FILE {
        // Small: read it whole now, in this same blocking call, and keep it.
        let mut contents = vec![0; metadata.len() as usize];
        file.read_exact_at(&mut contents, 0)?;
        return Ok(Target::File(Found::Cached(Arc::new(CachedFile {
            resolved,
            requested,
            metadata,
            contents: Bytes::from(contents),
        }))));
    }
    Ok(Target::File(Found::Opened {
        file,
        metadata,
        requested,
    }))
}

/// Builds the response for an open file: 412, 304, 200, 206 or 416.
fn respond(
    req: &HttpRequest,
    files: &StaticFiles,
    found: Found,
    head: bool,
) -> Result<HttpResponse, StaticError> {
    let validators = Validators::new(found.metadata(), SystemTime::now());
    let validator_headers = |builder: &mut HttpResponseBuilder| {
        builder
            .insert_header((header::ETAG, validators.etag.as_str()))
            .insert_header((header::LAST_MODIFIED, validators.last_modified_header()));
        if let Ok(cache_control) = HeaderValue::from_str(&files.cache_control) {
            builder.insert_header((header::CACHE_CONTROL, cache_control));
        }
    };

    if conditional::precondition_failed(req.headers(), &validators) {
        let mut response = HttpResponse::PreconditionFailed();
        validator_headers(&mut response);
        return Ok(response
            .content_type("text/plain; charset=utf-8")
            .body("precondition failed: the file is not the version named by If-Match or If-Unmodified-Since\n"));
    }
    if conditional::not_modified(req.headers(), &validators) {
        let mut response = HttpResponse::NotModified();
        validator_headers(&mut response);
        return Ok(response.finish());
    }

    let len = found.metadata().len();
    let content_type = content_type(found.requested());
    let plan = if head {
        // Range is defined for GET only (RFC 9110 §14.2); HEAD describes the whole file.
        RangePlan::Whole
    } else {
        range_plan(req.headers(), &validators, len)
    };
    let reply = match plan {
        RangePlan::Whole => Reply::whole(len, content_type),
        RangePlan::Unsatisfiable => return Err(StaticError::RangeNotSatisfiable { len }),
        RangePlan::Parts(parts) if parts.len() == 1 => Reply {
            status: StatusCode::PARTIAL_CONTENT,
            segments: vec![Segment::File {
                offset: parts[0].start,
                len: parts[0].len(),
            }],
            content_type,
            content_range: Some(parts[0].content_range(len)),
        },
        RangePlan::Parts(parts) => {
            let multipart = Multipart::new(&parts, len, &content_type);
            if file_body::total_len(&multipart.segments) > len {
                // Parts so small that the framing outweighs the file: the whole file is the
                // smaller answer (see the policy in `ranges`).
                log::debug!("{} small ranges: serving the whole file", parts.len());
                Reply::whole(len, content_type)
            } else {
                Reply {
                    status: StatusCode::PARTIAL_CONTENT,
                    content_type: multipart.content_type(),
                    segments: multipart.segments,
                    content_range: None,
                }
            }
        }
    };

    let mut response = HttpResponse::build(reply.status);
    validator_headers(&mut response);
    response
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CONTENT_TYPE, reply.content_type));
    if let Some(content_range) = reply.content_range {
        response.insert_header((header::CONTENT_RANGE, content_range));
    }
    // An explicit length makes actix send Content-Length instead of chunking the stream; for
    // HEAD it sends the header and no body, so the file is not read at all.
    response.no_chunking(file_body::total_len(&reply.segments));
    Ok(if head {
        response.streaming(futures_util::stream::empty::<std::io::Result<bytes::Bytes>>())
    } else {
        response.streaming(found.body(reply.segments))
    })
}

/// A 200 or 206 response before it is built.
struct Reply {
    status: StatusCode,
    segments: Vec<Segment>,
    content_type: String,
    content_range: Option<String>,
}

impl Reply {
    fn whole(len: u64, content_type: String) -> Reply {
        Reply {
            status: StatusCode::OK,
            segments: vec![Segment::File { offset: 0, len }],
            content_type,
            content_range: None,
        }
    }
}

/// The Range decision for a GET: a Range header that appears exactly once and is not
/// overruled by If-Range.
fn range_plan(headers: &HeaderMap, validators: &Validators, len: u64) -> RangePlan {
    let mut values = headers.get_all(header::RANGE);
    let (Some(range), None) = (values.next(), values.next()) else {
        return RangePlan::Whole;
    };
    let Ok(range) = range.to_str() else {
        return RangePlan::Whole;
    };
    if !conditional::range_allowed(headers, validators) {
        return RangePlan::Whole;
    }
    ranges::plan(range, len)
}

/// Content-Type from the extension; text types are declared UTF-8, which is what this
/// project's pages are written in.
fn content_type(path: &Path) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let textual =
        mime.type_() == mime_guess::mime::TEXT || mime.essence_str() == "application/javascript";
    if textual && mime.get_param(mime_guess::mime::CHARSET).is_none() {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            content_type(Path::new("a/index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x.css")), "text/css; charset=utf-8");
        assert_eq!(content_type(Path::new("x.png")), "image/png");
        assert_eq!(
            content_type(Path::new("no_extension")),
            "application/octet-stream"
        );
    }
}
