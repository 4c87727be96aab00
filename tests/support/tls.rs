//! Helpers for the TLS tests: a certificate authority made at test time (rcgen), server
//! certificates it issues for 127.0.0.1, written where the server reads them, and clients that
//! verify the server against that authority only (wss with tokio-tungstenite, https with
//! reqwest, and a raw TLS stream for what the libraries hide).

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SerialNumber};
use rustls::{
    crypto::ring,
    pki_types::{CertificateDer, ServerName},
    ClientConfig, RootCertStore,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::timeout,
};
use tokio_rustls::{client::TlsStream, TlsConnector};
use tokio_tungstenite::Connector;

use super::{
    ws_client::{client_config, handshake_request, wait_until_ready, Ws},
    TempDir,
};

/// A test certificate authority, and the server's certificate and key files.
pub struct TestPki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    ca_der: CertificateDer<'static>,
    dir: TempDir,
}

/// A server certificate the authority issued.
pub struct ServerCert {
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    /// A new authority, with its files in a new temporary directory.
    pub fn new() -> TestPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "switchboard test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_der = ca_params.self_signed(&ca_key).unwrap().der().clone();
        TestPki {
            ca_params,
            ca_key,
            ca_der,
            dir: TempDir::new("tls"),
        }
    }

    /// A certificate for 127.0.0.1 and localhost with this serial number, and a new key.
    pub fn issue(&self, serial: u64) -> ServerCert {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        ServerCert {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// A path in the temporary directory, for other files a test writes.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `cert` where the server reads its certificate and key.
    pub fn install(&self, cert: &ServerCert) {
        std::fs::write(self.cert_path(), &cert.cert_pem).unwrap();
        std::fs::write(self.key_path(), &cert.key_pem).unwrap();
    }

    /// The DER of the authority's own certificate.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// A client configuration that trusts this authority and nothing else.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// An https client that trusts this authority only.
    pub fn https_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_der(&self.ca_der).unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// The flags that give the server this authority's certificate.
    pub fn server_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert_path().display().to_string(),
            "--tls-key".into(),
            self.key_path().display().to_string(),
        ]
    }
}

/// Connects over wss to `path` offering `protocol` on `stream` (a TCP connection to the server
/// made by the caller), verifying the certificate, and waits until the server's session runs
/// (it answers a ping only then).
pub async fn wss_on(
    stream: TcpStream,
    addr: SocketAddr,
    path: &str,
    protocol: Option<&str>,
    config: Arc<ClientConfig>,
) -> Ws {
    let request = handshake_request(&format!("wss://{addr}{path}"), protocol);
    let (mut ws, _) = timeout(
        Duration::from_secs(30),
        tokio_tungstenite::client_async_tls_with_config(
            request,
            stream,
            Some(client_config()),
            Some(Connector::Rustls(config)),
        ),
    )
    .await
    .expect("wss handshake within 30 s")
    .expect("wss handshake");
    wait_until_ready(&mut ws).await;
    ws
}

/// [`wss_on`] on a new connection.
pub async fn wss(
    addr: SocketAddr,
    path: &str,
    protocol: Option<&str>,
    config: Arc<ClientConfig>,
) -> Ws {
    let stream = TcpStream::connect(addr).await.expect("connect");
    wss_on(stream, addr, path, protocol, config).await
}

/// A TCP connection whose receive buffer is tiny, so that a client that stops reading stalls
/// the server's writes to it quickly.
pub async fn small_window_stream(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.expect("connect")
}

/// A raw TLS connection (verified), for reading exactly what the server sends, TLS close_notify
/// included.
pub async fn raw_tls(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::IpAddress(addr.ip().into());
    timeout(
        Duration::from_secs(30),
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("TLS handshake within 30 s")
    .expect("TLS handshake")
}

/// The certificate the server presents to a new connection (a full handshake: a resumed
/// session would show the certificate of the session it resumes).
pub async fn presented_certificate(addr: SocketAddr, pki: &TestPki) -> CertificateDer<'static> {
    let mut config = (*pki.client_config()).clone();
    config.resumption = rustls::client::Resumption::disabled();
    let tls = raw_tls(addr, Arc::new(config)).await;
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

/// Sends a WebSocket upgrade on `tls` and reads the response head; returns it.
pub async fn upgrade(tls: &mut TlsStream<TcpStream>, path: &str, protocol: &str) -> String {
    let request =
        super::raw_ws::upgrade_request("GET", path, &[("Sec-WebSocket-Protocol", protocol)]);
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = timeout(Duration::from_secs(10), tls.read(&mut byte))
            .await
            .expect("response within 10 s")
            .expect("read");
        assert_eq!(n, 1, "connection ended during the response head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// How a TLS stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum TlsEnd {
    /// The server sent close_notify, then closed.
    CloseNotify,
    /// The stream ended otherwise (TCP closed without close_notify, or reset).
    Abrupt(std::io::ErrorKind),
}

/// Reads everything until the stream ends; panics if it has not within `limit`.
pub async fn read_to_end(tls: &mut TlsStream<TcpStream>, limit: Duration) -> (Vec<u8>, TlsEnd) {
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, tls.read(&mut chunk)).await {
            Err(_) => panic!(
                "the TLS stream did not end within {limit:?} ({} bytes read)",
                bytes.len()
            ),
            Ok(Ok(0)) => return (bytes, TlsEnd::CloseNotify),
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
            Ok(Err(err)) => return (bytes, TlsEnd::Abrupt(err.kind())),
        }
    }
}
