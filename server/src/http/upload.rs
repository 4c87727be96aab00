//! `POST /upload`: multipart/form-data, each file part streamed to `--upload-dir` as it arrives.
//!
//! Parts are never held whole in memory: each is written in blocks of at most [`BLOCK`] bytes
//! (hashed with SHA-256 on the same blocking thread). A request over `--max-upload`, stalled for
//! `--body-timeout`, or malformed leaves nothing behind: the files it created are removed.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use actix_multipart::Multipart;
use actix_web::{http::Method, web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    body::{BodyLimits, BoundedBody},
    request_error::RequestError,
};

/// Bytes gathered before each write to disk.
const BLOCK: usize = 256 * 1024;

/// Longest stored file name, in bytes.
pub const MAX_NAME: usize = 200;

/// Upload settings (`--upload-dir` unset: uploads are off).
pub struct Uploads {
    pub dir: Option<PathBuf>,
    pub limits: BodyLimits,
}

/// One part, as reported to the client.
#[derive(Debug, Serialize)]
struct StoredPart {
    field: String,
    /// The file name the client sent, if any.
    file: Option<String>,
    /// The name it was stored under in the upload directory (files only).
    stored_as: Option<String>,
    bytes: u64,
    sha256: String,
}

#[derive(Serialize)]
struct UploadReport {
    parts: Vec<StoredPart>,
    bytes: u64,
}

pub async fn upload(
    req: HttpRequest,
    payload: web::Payload,
    uploads: web::Data<Uploads>,
) -> Result<HttpResponse, RequestError> {
    if req.method() != Method::POST {
        return Err(RequestError::MethodNotAllowed { allow: "POST" });
    }
    let Some(dir) = uploads.dir.clone() else {
        return Err(RequestError::Disabled("uploading (--upload-dir)"));
    };
    let is_multipart = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if !is_multipart {
        return Err(RequestError::UnsupportedMediaType {
            expected: "multipart/form-data",
        });
    }
    let (body, outcome) = BoundedBody::new(&req, payload, uploads.limits)?;
    let mut multipart = Multipart::new(req.headers(), body);
    let mut created = CreatedFiles::default();
    let mut parts = Vec::new();
    while let Some(field) = multipart.next().await {
        let mut field =
            field.map_err(|err| outcome.error_for(|| RequestError::BadBody(err.to_string())))?;
        let field_name = field.name().unwrap_or_default().to_owned();
        let file_name = part_file_name(&field);
        let mut sink = match &file_name {
            Some(name) => {
                let (file, stored) = create_unique(&dir, &sanitize_file_name(name)).await?;
                created.0.push(dir.join(&stored));
                PartSink::file(file, stored)
            }
            None => PartSink::field(),
        };
        while let Some(chunk) = field.next().await {
            let chunk = chunk
                .map_err(|err| outcome.error_for(|| RequestError::BadBody(err.to_string())))?;
            sink.push(chunk).await?;
        }
        let (stored_as, bytes, sha256) = sink.finish().await?;
        parts.push(StoredPart {
            field: field_name,
            file: file_name,
            stored_as,
            bytes,
            sha256,
        });
    }
    created.keep();
    let bytes = parts.iter().map(|part| part.bytes).sum();
    log::info!("upload: {} parts, {bytes} bytes", parts.len());
    Ok(HttpResponse::Ok().json(UploadReport { parts, bytes }))
}

/// The files one request created; removed unless the request completes.
#[derive(Default)]
struct CreatedFiles(Vec<PathBuf>);

impl CreatedFiles {
    fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for CreatedFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Where one part's bytes go: a file (written in blocks) or, for a plain form field, nowhere
/// (it is counted and hashed only).
struct PartSink {
    file: Option<(File, String)>,
    pending: BytesMut,
    hasher: Sha256,
    bytes: u64,
}

impl PartSink {
    fn file(file: File, stored: String) -> PartSink {
        PartSink {
            file: Some((file, stored)),
            pending: BytesMut::new(),
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn field() -> PartSink {
        PartSink {
            file: None,
            pending: BytesMut::new(),
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    async fn push(&mut self, chunk: Bytes) -> Result<(), RequestError> {
        self.bytes += chunk.len() as u64;
        self.pending.extend_from_slice(&chunk);
        if self.pending.len() >= BLOCK {
            self.flush().await?;
        }
        Ok(())
    }

    /// Hashes and writes the pending block on the blocking pool, off the worker's event loop.
    async fn flush(&mut self) -> Result<(), RequestError> {
        let block = self.pending.split().freeze();
        let mut hasher = std::mem::take(&mut self.hasher);
        let file = self
            .file
            .as_ref()
            .map(|(file, _)| file.try_clone())
            .transpose()?;
        let hasher = web::block(move || -> io::Result<Sha256> {
            hasher.update(&block);
            if let Some(mut file) = file {
                file.write_all(&block)?;
            }
            Ok(hasher)
        })
        .await
        .map_err(|_| io::Error::other("blocking pool gone"))??;
        self.hasher = hasher;
        Ok(())
    }

    async fn finish(mut self) -> Result<(Option<String>, u64, String), RequestError> {
        self.flush().await?;
        let stored = self.file.map(|(_, stored)| stored);
        Ok((stored, self.bytes, hex::encode(self.hasher.finalize())))
    }
}

/// The file name a part was sent with, if any: `raw_file_name`, else the parsed header's.
/// A function of its own so that the fuzz target checks the names the handler uses.
pub fn part_file_name(field: &actix_multipart::Field) -> Option<String> {
    raw_file_name(field.headers()).or_else(|| {
        field
            .content_disposition()
            .and_then(|disposition| disposition.get_filename())
            .map(str::to_owned)
    })
}

/// The `filename="..."` of a part's Content-Disposition exactly as sent. Browsers that send a
/// whole Windows path (`C:\Users\x\a.txt`) do not escape its backslashes, and a strict parser
/// would drop them and glue the path into one name; taken raw, the path is cut at its last
/// separator like any other. (`filename*=` and names with escaped quotes fall back to the
/// parsed header.)
fn raw_file_name(headers: &actix_web::http::header::HeaderMap) -> Option<String> {
    let value = headers
        .get(actix_web::http::header::CONTENT_DISPOSITION)?
        .to_str()
        .ok()?;
    value.split(';').map(str::trim).find_map(|param| {
        let quoted = param.strip_prefix("filename=\"")?.strip_suffix('"')?;
        Some(unquote_leniently(quoted))
    })
}

/// Undoes quoted-string escapes (`\\` and `\"`) but keeps any other backslash, which can
/// only be a path separator that the sender did not escape.
fn unquote_leniently(quoted: &str) -> String {
    let mut name = String::with_capacity(quoted.len());
    let mut chars = quoted.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(&next @ ('\\' | '"'))) => {
                name.push(next);
                chars.next();
            }
            _ => name.push(c),
        }
    }
    name
}

/// A file name safe to create in the upload directory: the last path component only (`/` and
/// `\` both count), no control characters, no leading dots (no hidden files, no `..`), at
/// most [`MAX_NAME`] bytes; "upload" if nothing is left.
pub fn sanitize_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last.chars().filter(|c| !c.is_control()).collect();
    // Dots and white space at the start in any mix: ". x" must not become " x".
    let mut cleaned = cleaned
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end()
        .to_owned();
    if cleaned.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !cleaned.is_char_boundary(end) {
            end -= 1;
        }
        cleaned.truncate(end);
        // The cut may leave white space at the end.
        cleaned.truncate(cleaned.trim_end().len());
    }
    if cleaned.is_empty() {
        "upload".to_owned()
    } else {
        cleaned
    }
}

/// Creates `name` in `dir`, or `stem-1.ext`, `stem-2.ext`, ... if taken: an existing file is
/// never overwritten (`create_new` makes the check and the creation one step).
async fn create_unique(dir: &Path, name: &str) -> Result<(File, String), RequestError> {
    let dir = dir.to_owned();
    let name = name.to_owned();
    let created = web::block(move || -> io::Result<(File, String)> {
        let (stem, extension) = match name.rfind('.') {
            Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
            _ => (name.as_str(), ""),
        };
        for attempt in 0..10_000u32 {
            let candidate = if attempt == 0 {
                name.clone()
            } else {
                format!("{stem}-{attempt}{extension}")
            };
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dir.join(&candidate))
            {
                Ok(file) => return Ok((file, candidate)),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err),
            }
        }
        Err(io::Error::other("no free file name"))
    })
    .await
    .map_err(|_| io::Error::other("blocking pool gone"))??;
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::{sanitize_file_name, MAX_NAME};

    #[test]
    fn raw_windows_paths_keep_their_backslashes() {
        let mut headers = actix_web::http::header::HeaderMap::new();
        headers.insert(
            actix_web::http::header::CONTENT_DISPOSITION,
            actix_web::http::header::HeaderValue::from_static(
                "form-data; name=\"f\"; filename=\"C:\\Users\\x\\report.pdf\"",
            ),
        );
        let raw = super::raw_file_name(&headers).unwrap();
        assert_eq!(raw, "C:\\Users\\x\\report.pdf");
        assert_eq!(sanitize_file_name(&raw), "report.pdf");
    }

    #[test]
    fn quoted_string_escapes_are_undone() {
        assert_eq!(
            super::unquote_leniently(r#"..\\..\\win.txt"#),
            r"..\..\win.txt"
        );
        assert_eq!(
            super::unquote_leniently(r#"say \"hi\".txt"#),
            r#"say "hi".txt"#
        );
        assert_eq!(
            super::unquote_leniently(r"C:\Users\a.txt"),
            r"C:\Users\a.txt"
        );
    }

    #[test]
    fn names_lose_paths_controls_and_leading_dots() {
        assert_eq!(sanitize_file_name("report.pdf"), "report.pdf");
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_file_name("C:\\Users\\x\\a.txt"), "a.txt");
        assert_eq!(sanitize_file_name(".bashrc"), "bashrc");
        assert_eq!(sanitize_file_name("a\u{0}b\nc.txt"), "abc.txt");
        assert_eq!(sanitize_file_name(".."), "upload");
        assert_eq!(sanitize_file_name("dir/"), "upload");
        assert!(sanitize_file_name(&"é".repeat(300)).len() <= 200);
    }

    #[test]
    fn names_lose_white_space_around_them_whatever_the_dots() {
        // Found by the `http_upload` fuzz target: these kept the spaces after the dots.
        assert_eq!(sanitize_file_name(". x"), "x");
        assert_eq!(sanitize_file_name("\u{5}   .\0     \u{1c}   r"), "r");
        assert_eq!(sanitize_file_name(" . .hidden "), "hidden");
        let cut_before_a_space = format!("{} tail", "a".repeat(MAX_NAME - 1));
        assert_eq!(
            sanitize_file_name(&cut_before_a_space),
            "a".repeat(MAX_NAME - 1)
        );
        for name in [". x", "a/ .b", &cut_before_a_space] {
            let once = sanitize_file_name(name);
            assert_eq!(sanitize_file_name(&once), once);
        }
    }
}
