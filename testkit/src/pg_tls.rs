//! TLS in front of the machine's Postgres, for testing `sslmode=require/verify-ca/verify-full`
//! without a Postgres configured for TLS: [`TestPki`] makes a certificate authority and a
//! server certificate in the test; [`PgTlsProxy`] answers Postgres' `SSLRequest` with `S`,
//! completes the TLS handshake with that certificate and forwards the decrypted stream to the
//! real server (which sees an ordinary plaintext connection).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The request code of Postgres' `SSLRequest` (protocol docs, "SSL Session Encryption").
const SSL_REQUEST: u32 = 80_877_103;

/// A certificate authority made for one test and a server certificate it signed.
pub struct TestPki {
    /// The CA certificate, PEM (what `sslrootcert=` points at).
    pub ca_pem: String,
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl TestPki {
    /// A fresh CA and a server certificate for `hosts` (DNS names or IP addresses).
    pub fn new(hosts: &[&str]) -> TestPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: two test CAs must not look like one issuer to a verifier.
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("Tandem test CA {} {serial}", std::process::id()),
        );
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
            .expect("self-signed CA");
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "tandem test postgres");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca).expect("server certificate");
        TestPki {
            ca_pem: ca.pem(),
            cert: cert.der().clone(),
            key: key.serialize_der(),
        }
    }

    /// Writes the CA certificate to `dir/name` and returns the path.
    pub fn write_ca(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.ca_pem).expect("write CA certificate");
        path
    }

    fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .expect("server certificate and key");
        TlsAcceptor::from(Arc::new(config))
    }
}

/// A TLS-terminating proxy for Postgres on 127.0.0.1:0. A client that does not ask for TLS
/// is forwarded as is.
pub struct PgTlsProxy {
    /// Where clients connect instead of Postgres.
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl PgTlsProxy {
    /// Starts forwarding to `upstream` (`host:port`), presenting `pki`'s server certificate.
    pub async fn start(upstream: String, pki: &TestPki) -> PgTlsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let acceptor = pki.acceptor();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = forward(client, &upstream, acceptor).await;
                });
            }
        });
        PgTlsProxy { addr, accept }
    }
}

impl Drop for PgTlsProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn forward(
    mut client: TcpStream,
    upstream: &str,
    acceptor: TlsAcceptor,
) -> std::io::Result<()> {
    let mut first = [0u8; 8];
    client.read_exact(&mut first).await?;
    let len = u32::from_be_bytes([first[0], first[1], first[2], first[3]]);
    let code = u32::from_be_bytes([first[4], first[5], first[6], first[7]]);
    let mut server = TcpStream::connect(upstream).await?;
    if len == 8 && code == SSL_REQUEST {
        client.write_all(b"S").await?;
        // A failed handshake (the client rejected the certificate) just ends the connection.
        let mut tls = acceptor.accept(client).await?;
        tokio::io::copy_bidirectional(&mut tls, &mut server).await?;
    } else {
        server.write_all(&first).await?;
        tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    }
    Ok(())
}
