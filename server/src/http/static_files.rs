//! Static files from `--static-dir` (placeholder until the full implementation lands).

use std::path::{Path, PathBuf};

use actix_web::{HttpRequest, HttpResponse};

use crate::server::StartError;

/// The static directory, resolved once at start-up.
pub struct StaticFiles {
    pub root: PathBuf,
    pub cache_control: String,
}

impl StaticFiles {
    pub fn open(dir: &Path, cache_control: &str) -> Result<StaticFiles, StartError> {
        let root = dir.canonicalize().map_err(|source| StartError::StaticDir {
            path: dir.display().to_string(),
            source,
        })?;
        if !root.is_dir() {
            return Err(StartError::StaticDirNotDir(dir.display().to_string()));
        }
        Ok(StaticFiles {
            root,
            cache_control: cache_control.to_owned(),
        })
    }
}

pub async fn serve(_req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().finish()
}
