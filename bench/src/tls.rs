//! wss for the load client: the server's certificate is verified against the authority given
//! with `--ca-cert` (a bench makes its own, see compare.sh), so the handshake is the one a real
//! client does.

use std::{path::Path, sync::Arc, sync::OnceLock};

use anyhow::{bail, Context, Result};
use rustls::{
    crypto::ring,
    pki_types::{pem::PemObject, CertificateDer},
    ClientConfig, RootCertStore,
};
use tokio_tungstenite::Connector;

static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();

/// Reads the authority's certificates once, at start-up (`None`: no wss in this run).
pub fn init(ca_cert: Option<&Path>) -> Result<()> {
    let Some(path) = ca_cert else {
        return Ok(());
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("--ca-cert {}", path.display()))?
    {
        let cert = cert.with_context(|| format!("--ca-cert {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("--ca-cert {}", path.display()))?;
    }
    if roots.is_empty() {
        bail!("--ca-cert {}: no certificate in the file", path.display());
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let _ = CONFIG.set(Arc::new(config));
    Ok(())
}

/// The connector for a `wss://` target.
pub fn connector() -> Result<Connector> {
    match CONFIG.get() {
        Some(config) => Ok(Connector::Rustls(config.clone())),
        None => bail!(
            "wss:// needs --ca-cert FILE (the authority that signed the server's certificate)"
        ),
    }
}
