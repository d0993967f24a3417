//! A minimal HTTP/1.1 client for the admin API: GET requests over one keep-alive TCP
//! connection, so a timed request is exactly one request/response exchange (no connection
//! set-up, no pool, no TLS). Handles `Content-Length`, chunked bodies and `Connection: close`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::Error;

/// Longest status line or header line accepted.
const MAX_LINE: usize = 16 * 1024;
/// Most header lines accepted.
const MAX_HEADERS: usize = 100;
/// Largest body accepted (a state or diff of a big document is a few MB).
const MAX_BODY: usize = 512 * 1024 * 1024;

/// One response.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Header names (lower-cased) and values.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, for error messages (at most 300 bytes).
    pub fn snippet(&self) -> String {
        let end = self.body.len().min(300);
        String::from_utf8_lossy(&self.body[..end]).into_owned()
    }
}

/// A keep-alive connection to one server; reconnects when the server closed it.
pub struct Client {
    addr: SocketAddr,
    bearer: Option<String>,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
    /// Connections opened so far (1 when keep-alive held throughout).
    pub connects: u64,
}

impl Client {
    /// A client for `addr`; `bearer` is sent as `Authorization: Bearer ...` with every request.
    pub fn new(addr: SocketAddr, bearer: Option<String>, timeout: Duration) -> Self {
        Client {
            addr,
            bearer,
            timeout,
            conn: None,
            connects: 0,
        }
    }

    /// Opens the connection now (so the first timed request does not include the connect).
    pub async fn connect(&mut self) -> Result<(), Error> {
        if self.conn.is_none() {
            let stream = tokio::time::timeout(self.timeout, TcpStream::connect(self.addr))
                .await
                .map_err(|_| format!("connect {}: timed out", self.addr))?
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            stream
                .set_nodelay(true)
                .map_err(|e| format!("TCP_NODELAY: {e}"))?;
            self.conn = Some(BufReader::with_capacity(64 * 1024, stream));
            self.connects += 1;
        }
        Ok(())
    }

    /// `GET path` (path includes the query). Retries once on a fresh connection if a reused
    /// one turns out to be closed before any response byte arrived.
    pub async fn get(&mut self, path: &str) -> Result<Response, Error> {
        self.send("GET", path, None).await
    }

    /// `POST path` with a JSON body. Retried like [`Client::get`]: only when a reused
    /// connection was closed before the request could have been read.
    pub async fn post_json(&mut self, path: &str, body: &str) -> Result<Response, Error> {
        self.send("POST", path, Some(body)).await
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, Error> {
        let reused = self.conn.is_some();
        match self.try_send(method, path, body).await {
            Ok(r) => Ok(r),
            Err(GetError::Closed) if reused => {
                self.conn = None;
                self.try_send(method, path, body)
                    .await
                    .map_err(GetError::into_error)
            }
            Err(e) => {
                self.conn = None;
                Err(e.into_error())
            }
        }
    }

    async fn try_send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, GetError> {
        self.connect().await.map_err(GetError::Other)?;
        let timeout = self.timeout;
        let request = self.request(method, path, body);
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| GetError::Other("no connection".into()))?;
        let response = tokio::time::timeout(timeout, exchange(conn, &request))
            .await
            .map_err(|_| {
                GetError::Other(format!("{method} {path}: no response within {timeout:?}").into())
            })??;
        let close = response
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if close {
            self.conn = None;
        }
        Ok(response)
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
        let mut r = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\nUser-Agent: tandem-bench\r\n",
            self.addr
        );
        if let Some(body) = body {
            r.push_str("Content-Type: application/json\r\n");
            r.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if let Some(token) = &self.bearer {
            r.push_str("Authorization: Bearer ");
            r.push_str(token);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        if let Some(body) = body {
            r.push_str(body);
        }
        r.into_bytes()
    }
}

enum GetError {
    /// The connection was closed before a response started (a stale keep-alive connection).
    Closed,
    Other(Error),
}

impl GetError {
    fn into_error(self) -> Error {
        match self {
            GetError::Closed => "connection closed by the server before a response".into(),
            GetError::Other(e) => e,
        }
    }
}

impl From<Error> for GetError {
    fn from(e: Error) -> Self {
        GetError::Other(e)
    }
}

impl From<String> for GetError {
    fn from(e: String) -> Self {
        GetError::Other(e.into())
    }
}

/// Writes one request and reads its response.
///
/// Why one function: one request and its response on a raw socket, parsed in sequence (status,
/// headers, sized or chunked body).
async fn exchange(conn: &mut BufReader<TcpStream>, request: &[u8]) -> Result<Response, GetError> {
    if let Err(e) = conn.get_mut().write_all(request).await {
        // A stale keep-alive connection fails on write (reset) or on the first read (EOF).
        return Err(match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                GetError::Closed
            }
            _ => GetError::Other(format!("write: {e}").into()),
        });
    }
    let mut line = String::new();
    let status_line = match read_line(conn, &mut line).await {
        Ok(0) => return Err(GetError::Closed),
        Ok(_) => line.trim_end().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Err(GetError::Closed),
        Err(e) => return Err(GetError::Other(format!("read status line: {e}").into())),
    };
    let status = parse_status(&status_line)?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        let n = read_line(conn, &mut line)
            .await
            .map_err(|e| format!("read header: {e}"))?;
        if n == 0 {
            return Err(GetError::Other(
                "connection closed inside the headers".into(),
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(GetError::Other("too many response headers".into()));
        }
        let (name, value) = l
            .split_once(':')
            .ok_or_else(|| format!("malformed header line {l:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let find = |n: &str| {
        headers
            .iter()
            .find(|(h, _)| h == n)
            .map(|(_, v)| v.as_str())
    };
    let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = find("content-length")
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| format!("bad Content-Length {v:?}"))
        })
        .transpose()?;
    let body = if chunked {
        read_chunked(conn).await?
    } else if let Some(len) = length {
        if len > MAX_BODY {
            return Err(GetError::Other(
                format!("body of {len} bytes is too large").into(),
            ));
        }
        let mut body = vec![0; len];
        conn.read_exact(&mut body)
            .await
            .map_err(|e| format!("read body: {e}"))?;
        body
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else {
        // Delimited by the end of the connection.
        let mut body = Vec::new();
        (&mut *conn)
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut body)
            .await
            .map_err(|e| format!("read body: {e}"))?;
        if body.len() > MAX_BODY {
            return Err(GetError::Other("body too large".into()));
        }
        headers.push(("connection".into(), "close".into()));
        body
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Reads one line of at most [`MAX_LINE`] bytes.
async fn read_line(conn: &mut BufReader<TcpStream>, line: &mut String) -> std::io::Result<usize> {
    let n = (&mut *conn).take(MAX_LINE as u64).read_line(line).await?;
    if n == MAX_LINE && !line.ends_with('\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "response line too long",
        ));
    }
    Ok(n)
}

fn parse_status(line: &str) -> Result<u16, Error> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {line:?}").into());
    }
    parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {line:?}").into())
}

async fn read_chunked(conn: &mut BufReader<TcpStream>) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        read_line(conn, &mut line)
            .await
            .map_err(|e| format!("read chunk size: {e}"))?;
        let size_text = line.trim_end().split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                line.clear();
                let n = read_line(conn, &mut line)
                    .await
                    .map_err(|e| format!("read trailer: {e}"))?;
                if n == 0 || line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err("chunked body too large".into());
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..])
            .await
            .map_err(|e| format!("read chunk: {e}"))?;
        let mut crlf = [0u8; 2];
        conn.read_exact(&mut crlf)
            .await
            .map_err(|e| format!("read chunk end: {e}"))?;
        if &crlf != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
    }
}

/// `encodeURIComponent`: a document name as one path segment.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_components_like_javascript() {
        assert_eq!(encode_component("notes/2024 a"), "notes%2F2024%20a");
        assert_eq!(encode_component("ä"), "%C3%A4");
        assert_eq!(encode_component("a-b_c.d"), "a-b_c.d");
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status("HTTP/1.1 200 OK").ok(), Some(200));
        assert_eq!(parse_status("HTTP/1.1 404").ok(), Some(404));
        assert!(parse_status("SSH-2.0").is_err());
    }
}
