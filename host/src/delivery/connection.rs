//! A worker's own HTTP/1.1 connection to its endpoint, kept alive between attempts.
//!
//! Each lane worker owns at most one connection and drives it inside its own task: the
//! request, the response and the connection's reads and writes are polled together, so an
//! attempt costs no hand-off between tasks and no shared pool lock. That is the pooling of
//! the delivery engine: an endpoint with `concurrency = N` keeps up to N connections open and
//! reuses each for the next attempt.
//!
//! A connection is dropped, and the next attempt connects afresh, when the receiver closes it,
//! when an attempt fails or times out in the middle, when a response body is not read to the
//! end, or when it has been idle longer than [`IDLE_LIMIT`].

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::delivery::egress::{EgressGuard, ResolveError};
use crate::delivery::endpoint::Target;

/// How long an unused connection is trusted to still be open. Receivers commonly close idle
/// keep-alive connections after 60 s or more; reconnecting before that avoids racing them.
pub const IDLE_LIMIT: Duration = Duration::from_secs(50);

/// A byte stream to a receiver: plain TCP or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

type Driver = http1::Connection<TokioIo<Box<dyn Stream>>, Full<Bytes>>;

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("could not connect: no answer within {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("could not start HTTP/1.1: {0}")]
    Http(#[from] hyper::Error),
    #[error(transparent)]
    Egress(#[from] ResolveError),
}

/// What every worker's connections share: the TLS settings, the connect timeout and the
/// egress guard.
#[derive(Clone)]
pub struct Connector {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    egress: EgressGuard,
}

impl Connector {
    /// Verifies receivers' certificates with the platform's roots (on Linux the system CA
    /// bundle, or the file `SSL_CERT_FILE` names).
    pub fn new(connect_timeout: Duration, egress: EgressGuard) -> Result<Self, rustls::Error> {
        use rustls_platform_verifier::ConfigVerifierExt as _;
        let mut config = rustls::ClientConfig::with_platform_verifier()?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            connect_timeout,
            egress,
        })
    }

    /// Opens a connection to `target`: name resolution checked by the egress guard, TCP to
    /// exactly the addresses checked, TLS for `https`, then the HTTP/1.1 handshake.
    async fn connect(&self, target: &Target) -> Result<Live, ConnectError> {
        let open = async {
            let addresses = self.egress.resolve(&target.host, target.port).await?;
            let tcp = TcpStream::connect(addresses.as_slice()).await?;
            tcp.set_nodelay(true)?;
            let stream: Box<dyn Stream> = match &target.tls_name {
                Some(name) => Box::new(
                    self.tls
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(ConnectError::Tls)?,
                ),
                None => Box::new(tcp),
            };
            Ok::<_, ConnectError>(stream)
        };
        let stream = tokio::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| ConnectError::Timeout(self.connect_timeout))??;
        let (sender, driver) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        Ok(Live {
            sender,
            driver: Some(Box::pin(driver)),
            last_used: Instant::now(),
        })
    }
}

/// An open connection: the handle requests go through and the future that does the I/O.
struct Live {
    sender: http1::SendRequest<Full<Bytes>>,
    /// `None` once the connection has ended.
    driver: Option<Pin<Box<Driver>>>,
    last_used: Instant,
}

/// One worker's connection slot.
pub struct Connection {
    connector: Connector,
    live: Option<Live>,
}

/// A request could not be sent or answered on the connection.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

impl Connection {
    pub fn new(connector: Connector) -> Self {
        Self {
            connector,
            live: None,
        }
    }

    /// Sends `request` and returns the response head; read the body with
    /// [`Connection::read_body`]. Reuses the open connection when it is still good, and
    /// resends once on a fresh connection when the receiver closed the old one before the
    /// request went out.
    pub async fn send(
        &mut self,
        target: &Target,
        mut request: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, SendError> {
        let mut fresh = false;
        loop {
            if !self.is_reusable().await {
                self.live = Some(self.connector.connect(target).await?);
                fresh = true;
            }
            let live = self.live.as_mut().expect("a live connection");
            let sent = drive(&mut live.driver, live.sender.try_send_request(request)).await;
            match sent {
                Ok(response) => return Ok(response),
                Err(mut err) => {
                    self.live = None;
                    match err.take_message() {
                        // Never written: the receiver had closed a kept-alive connection.
                        Some(unsent) if !fresh => request = unsent,
                        _ => return Err(SendError::Http(err.into_error())),
                    }
                }
            }
        }
    }

    /// Reads up to `limit` bytes of `body` into `kept`, which holds what arrived even when the
    /// body breaks off or the caller gives up waiting. The connection stays open for the next
    /// attempt only when the body ended within the limit.
    pub async fn read_body(
        &mut self,
        mut body: hyper::body::Incoming,
        limit: usize,
        kept: &mut Vec<u8>,
    ) {
        use http_body_util::BodyExt as _;
        use hyper::body::Body as _;
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let ended = loop {
            match drive(&mut live.driver, body.frame()).await {
                None => break true,
                Some(Err(_)) => break false,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = limit.saturating_sub(kept.len());
                        kept.extend_from_slice(&data[..data.len().min(room)]);
                        if kept.len() >= limit {
                            break body.is_end_stream();
                        }
                    }
                }
            }
        };
        if ended {
            live.last_used = Instant::now();
        } else {
            self.live = None;
        }
    }

    /// Forgets the connection (after a timeout, its state is unknown).
    pub fn reset(&mut self) {
        self.live = None;
    }

    /// Whether the open connection can take a request now; drops it when it cannot.
    async fn is_reusable(&mut self) -> bool {
        let Some(live) = self.live.as_mut() else {
            return false;
        };
        if live.last_used.elapsed() > IDLE_LIMIT || live.driver.is_none() {
            self.live = None;
            return false;
        }
        // Poll the connection first, so a close from the receiver is noticed before reuse.
        let ready = poll_fn(|cx| {
            if let Some(connection) = live.driver.as_mut()
                && connection.as_mut().poll(cx).is_ready()
            {
                live.driver = None;
                return Poll::Ready(false);
            }
            live.sender.poll_ready(cx).map(|ready| ready.is_ok())
        })
        .await;
        if !ready {
            self.live = None;
        }
        ready
    }
}

/// Runs `work` while driving the connection, which does the reading and writing `work` waits
/// for. When the connection ends, it is dropped (failing whatever still waited on it) and
/// `work` gets its answer from that.
async fn drive<F: Future>(driver: &mut Option<Pin<Box<Driver>>>, work: F) -> F::Output {
    let mut work = pin!(work);
    poll_fn(|cx| {
        if let Poll::Ready(output) = work.as_mut().poll(cx) {
            return Poll::Ready(output);
        }
        if let Some(connection) = driver.as_mut()
            && connection.as_mut().poll(cx).is_ready()
        {
            *driver = None;
            return work.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await
}
