//! The smallest HTTP/1.1 server that Prometheus can scrape: `GET /metrics`,
//! one request per connection, on netmon's own single-threaded runtime.
//!
//! A web framework would bring threads (capabilities are per thread, and
//! netmon drops them on the one it has) and far more code than answering
//! one path needs.
//!
//! The endpoint may face anyone (the DaemonSet binds 0.0.0.0): it holds at
//! most [`MAX_CLIENTS`] connections, so that clients that connect and send
//! nothing cannot take the file descriptors a checkpoint needs, and gives
//! each a few seconds. Connections beyond the cap wait in the kernel's
//! accept queue, where they cost netmon no descriptor.
use std::{
    io,
    net::{SocketAddr, TcpListener},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use log::{debug, warn};
use prometheus_client::registry::Registry;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    task::JoinSet,
};

use super::{Format, encode};

/// The longest request head read: a scrape's is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// Connections served at once. Prometheus scrapes with one at a time.
const MAX_CLIENTS: usize = 32;
/// How long a client may take to send its request head: a scraper sends
/// it at once, a slow one only holds a place another could use.
const HEAD_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one client may take to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `--metrics` socket, bound but not yet served.
pub struct Endpoint {
    listener: TcpListener,
}

impl Endpoint {
    /// Binds `addr` now, while netmon still has its capabilities: a port
    /// below 1024 needs CAP_NET_BIND_SERVICE, which is dropped after
    /// start-up.
    pub fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .with_context(|| format!("--metrics {addr}: cannot listen"))?;
        Ok(Self { listener })
    }

    /// Answers scrapes from `registry` on the current runtime, for as long
    /// as it runs.
    pub fn serve(self, registry: Arc<Registry>) -> anyhow::Result<()> {
        let addr = self.listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .with_context(|| format!("--metrics {addr}"))?;
        log::info!("metrics at http://{addr}/metrics");
        tokio::spawn(async move {
            let mut clients = JoinSet::new();
            loop {
                // Full: accept nothing (taking no descriptor) until one ends.
                while clients.len() >= MAX_CLIENTS {
                    clients.join_next().await;
                }
                while clients.try_join_next().is_some() {}
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        clients.spawn(answer(stream, peer, Arc::clone(&registry)));
                    }
                    // Out of descriptors, say: wait rather than spin.
                    Err(err) => {
                        warn!("--metrics {addr}: accept failed: {err}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(())
    }
}

async fn answer(mut stream: TcpStream, peer: SocketAddr, registry: Arc<Registry>) {
    match tokio::time::timeout(CLIENT_TIMEOUT, exchange(&mut stream, &registry)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => debug!("metrics client {peer}: {err}"),
        Err(_) => debug!("metrics client {peer}: timed out"),
    }
}

/// Reads one request and writes its response.
async fn exchange(stream: &mut TcpStream, registry: &Registry) -> io::Result<()> {
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request head in time"))??;
    let response = respond(&head, registry);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The request line and headers, up to the blank line.
async fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_REQUEST {
            break;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..read]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The whole response to a request head.
fn respond(head: &str, registry: &Registry) -> String {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next());
    let path = target.map(|target| target.split('?').next().unwrap_or_default());
    match (method, path) {
        ("GET", Some("/metrics")) => {
            let accept = lines.find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("accept").then(|| value.trim())
            });
            let format = Format::negotiate(accept);
            response("200 OK", format.content_type(), &encode(registry, format))
        }
        ("GET", Some(_)) => response("404 Not Found", TEXT, "netmon serves /metrics\n"),
        (_, Some(_)) => response("405 Method Not Allowed", TEXT, "GET /metrics\n"),
        _ => response("400 Bad Request", TEXT, "GET /metrics\n"),
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(response: &str) -> &str {
        response.lines().next().unwrap()
    }

    #[test]
    fn answers_metrics_and_nothing_else() {
        let registry = Registry::default();
        let ok = respond("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &registry);
        assert_eq!(status(&ok), "HTTP/1.1 200 OK");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"));
        let om = respond(
            "GET /metrics?x=1 HTTP/1.1\r\nACCEPT: application/openmetrics-text\r\n\r\n",
            &registry,
        );
        assert!(om.contains("Content-Type: application/openmetrics-text"));
        assert!(om.ends_with("# EOF\n"));
        assert_eq!(
            status(&respond("GET / HTTP/1.1\r\n\r\n", &registry)),
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(
            status(&respond("POST /metrics HTTP/1.1\r\n\r\n", &registry)),
            "HTTP/1.1 405 Method Not Allowed"
        );
        assert_eq!(
            status(&respond("\u{0}garbage", &registry)),
            "HTTP/1.1 400 Bad Request"
        );
    }
}
