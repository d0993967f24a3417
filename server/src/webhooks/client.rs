//! A small HTTP/1.1 client for webhook deliveries: hyper's connection API over TCP, or over
//! rustls (ring, the system's root certificates) for https. Idle connections are kept per
//! receiver and reused, so a busy outbox does not pay a handshake per delivery.
//!
//! Why not a general client crate: deliveries need a POST, a status and a timeout; hyper,
//! rustls and the root store are in the tree already (the server and sqlx use them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::target::Target;

/// Most bytes of a receiver's answer read (only so the connection can be reused; the body
/// is not used). A longer answer costs the connection, not the delivery.
const MAX_ANSWER: usize = 64 * 1024;
/// Idle connections kept per receiver.
const MAX_IDLE: usize = 32;

/// Why an attempt failed before a status arrived; the text is stored as the delivery's
/// `last_error`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    /// No TCP connection.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed (certificate refused, ...).
    #[error("tls: {0}")]
    Tls(std::io::Error),
    /// HTTP-level failure (connection closed, malformed answer).
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// No answer within `--webhook-timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request could not be built (a header value the receiver URL made invalid).
    #[error("request: {0}")]
    Request(String),
}

type Sender = SendRequest<Full<Bytes>>;
/// Idle connections by [`Target::pool_key`].
type Idle = HashMap<(bool, String, u16), Vec<Sender>>;

/// The client; cheap to clone.
#[derive(Clone)]
pub(crate) struct Client {
    tls: Option<TlsConnector>,
    timeout: Duration,
    idle: Arc<Mutex<Idle>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with attempts bounded by `timeout`; with TLS (the system's roots) when `tls`.
    pub(crate) fn new(timeout: Duration, tls: bool) -> Result<Client, String> {
        let tls = if tls { Some(tls_connector()?) } else { None };
        Ok(Client {
            tls,
            timeout,
            idle: Arc::default(),
        })
    }

    /// POSTs `body` with `headers` to `target`; the answer's status.
    pub(crate) async fn post(
        &self,
        target: &Target,
        headers: &[(HeaderName, String)],
        body: Bytes,
    ) -> Result<u16, DeliveryError> {
        tokio::time::timeout(self.timeout, self.post_now(target, headers, body))
            .await
            .map_err(|_| DeliveryError::Timeout(self.timeout))?
    }

    async fn post_now(
        &self,
        target: &Target,
        headers: &[(HeaderName, String)],
        body: Bytes,
    ) -> Result<u16, DeliveryError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(target.path.as_str())
            .header(HOST, target.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("tandem/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|e| DeliveryError::Request(format!("{name}: {e}")))?;
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| DeliveryError::Request(e.to_string()))?;
        let mut sender = match self.reusable(target).await {
            Some(sender) => sender,
            None => self.connect(target).await?,
        };
        let answer = sender.send_request(request).await?;
        let status = answer.status().as_u16();
        // Read the (small) answer so the connection can carry the next delivery.
        if Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .is_ok()
        {
            self.keep(target, sender);
        }
        Ok(status)
    }

    /// An idle connection to `target` that is still open.
    async fn reusable(&self, target: &Target) -> Option<Sender> {
        loop {
            let mut sender = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.get_mut(&target.pool_key())?.pop()?
            };
            // A connection the receiver closed while idle fails here, not mid-request.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn keep(&self, target: &Target, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(target.pool_key()).or_default();
        if list.len() < MAX_IDLE {
            list.push(sender);
        }
    }

    async fn connect(&self, target: &Target) -> Result<Sender, DeliveryError> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(DeliveryError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match (&self.tls, target.https) {
            (Some(tls), true) => {
                let name = ServerName::try_from(target.host.clone()).map_err(|e| {
                    DeliveryError::Tls(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                })?;
                let stream = tls.connect(name, tcp).await.map_err(DeliveryError::Tls)?;
                handshake(stream).await
            }
            (None, true) => Err(DeliveryError::Request(
                "https receiver but no TLS configured".into(),
            )),
            (_, false) => handshake(tcp).await,
        }
    }
}

/// HTTP/1.1 on `stream`; the connection is driven by a task of its own until it closes.
async fn handshake<S>(stream: S) -> Result<Sender, DeliveryError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "webhook connection ended");
        }
    });
    Ok(sender)
}

/// TLS with ring and the operating system's root certificates, HTTP/1.1 by ALPN.
fn tls_connector() -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A certificate the store cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(
            "https webhook URL, but no root certificates found on this system \
             (install ca-certificates)"
                .into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
