//! Clients that misbehave on purpose: raw TCP and TLS connections that send part of a request and stall, and
//! readers for whatever the server answers (or whether it hangs up) before a deadline.
#![allow(dead_code)]

use rustls::pki_types::ServerName;
use signaling::tls::accept_any_certificate;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// One HTTP/1.1 response as it arrived.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("a JSON body: {self:?}"))
    }
}

pub async fn tcp(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("the server accepts connections")
}

/// A TLS connection to the test server's HTTPS listener (its certificate is self-signed: any is accepted).
pub async fn tls(addr: SocketAddr) -> TlsStream<TcpStream> {
    let connector = TlsConnector::from(accept_any_certificate());
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp(addr).await).await.expect("the TLS handshake completes")
}

/// Reads until the server closes the connection (or resets it); `None` if it is still open after `limit`.
/// Returns what arrived before the close.
pub async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response (head, then a `Content-Length` body) within `limit`; `None` if it has not all arrived.
pub async fn response_within<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> Option<Answer> {
    let deadline = Instant::now() + limit;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(answer) = parse(&data) {
            return Some(answer);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => data.extend_from_slice(&buf[..n]),
        }
    }
}

/// A whole response in `data`, or None if more must arrive.
fn parse(data: &[u8]) -> Option<Answer> {
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&data[..end]).expect("an ASCII response head");
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let body = data.get(end + 4..end + 4 + len)?;
    Some(Answer { status, headers, body: String::from_utf8_lossy(body).into_owned() })
}
