//! TLS on the listener (`--tls-cert`, `--tls-key`): https and wss on the same port, with rustls
//! and its `ring` provider.
//!
//! The certificate and key are read from PEM files at start-up, where any mistake stops the
//! server with the file named. SIGHUP reads them again: the [`CertResolver`] hands every new
//! handshake the certificate current at that moment, so connections already open keep theirs
//! and none is dropped; a new pair that does not load is logged and the old one kept.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rustls::{
    crypto::{ring, CryptoProvider},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};

/// An accepted TLS connection, as `on_connect` sees it.
pub type TlsStream = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert and --tls-key go together: {given} was given without {missing}")]
    Incomplete {
        given: &'static str,
        missing: &'static str,
    },
    #[error("TLS certificate {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("TLS key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("TLS key {key} does not match the certificate {cert}")]
    Mismatch { cert: String, key: String },
}

/// Where the certificate chain and its private key are read from (and read again on SIGHUP).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl TlsFiles {
    /// Both files, or neither (plain TCP); one alone is a mistake.
    pub fn from_flags(
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<TlsFiles>, TlsError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(TlsError::Incomplete {
                given: "--tls-cert",
                missing: "--tls-key",
            }),
            (None, Some(_)) => Err(TlsError::Incomplete {
                given: "--tls-key",
                missing: "--tls-cert",
            }),
        }
    }

    /// Reads and checks the pair: a chain of at least one certificate, a private key the
    /// provider can sign with, and the key belonging to the first certificate.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let cert_path = self.cert.display().to_string();
        let key_path = self.key.display().to_string();
        let cert_error = |reason: String| TlsError::Cert {
            path: cert_path.clone(),
            reason,
        };
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|err| cert_error(pem_reason(err, "certificate")))?;
        if chain.is_empty() {
            return Err(cert_error("no PEM certificate in the file".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|err| TlsError::Key {
            path: key_path.clone(),
            reason: pem_reason(err, "private key"),
        })?;
        let signing_key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|err| TlsError::Key {
                path: key_path.clone(),
                reason: err.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(Arc::new(certified))
            }
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(TlsError::Mismatch {
                    cert: cert_path,
                    key: key_path,
                })
            }
            Err(err) => Err(cert_error(err.to_string())),
        }
    }
}

/// A PEM error in words ("no items found" says little to an operator).
fn pem_reason(err: rustls::pki_types::pem::Error, wanted: &str) -> String {
    use rustls::pki_types::pem::Error;
    match err {
        Error::NoItemsFound => format!("no PEM {wanted} in the file"),
        Error::Io(err) => err.to_string(),
        other => format!("not valid PEM: {other}"),
    }
}

/// The one crypto provider: `ring` (aws-lc-rs is not built).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Hands each new handshake the current certificate; [`CertResolver::reload`] swaps it.
pub struct CertResolver {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    /// Loads the pair for the first time (a mistake here stops the server).
    pub fn load(files: TlsFiles) -> Result<CertResolver, TlsError> {
        let current = RwLock::new(files.load()?);
        Ok(CertResolver { files, current })
    }

    /// Reads the files again; on success new handshakes use the new pair, on failure nothing
    /// changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = self.files.load()?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
        Ok(())
    }

    /// The certificate file, for the log.
    pub fn cert_path(&self) -> &Path {
        &self.files.cert
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        )
    }
}

/// The listener's TLS settings: TLS 1.2 and 1.3, no client certificates, the resolver's pair.
/// (actix-http adds the ALPN protocol `http/1.1`.)
pub fn server_config(resolver: Arc<CertResolver>) -> ServerConfig {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver)
}

/// SIGHUP: reloads the certificate and key when TLS is on, and says there is nothing to reload
/// when it is off (either way the signal no longer ends the process, as it would by default).
pub async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    resolver: Option<Arc<CertResolver>>,
) {
    while hangups.recv().await.is_some() {
        match &resolver {
            None => log::info!("SIGHUP: no --tls-cert/--tls-key, nothing to reload"),
            Some(resolver) => match resolver.reload() {
                Ok(()) => log::info!(
                    "SIGHUP: TLS certificate reloaded from {}; new connections use it",
                    resolver.cert_path().display()
                ),
                Err(err) => log::error!("SIGHUP: {err}; keeping the current certificate"),
            },
        }
    }
}
