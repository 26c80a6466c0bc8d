//! The admin API's listener: hyper's HTTP/1.1 server with limits a client cannot outwait.
//!
//! * **Header-read timeout**: a connection that has not sent a whole request head within
//!   `header_read_timeout` is closed (slowloris).
//! * **Body timeout**: the body must arrive within `body_timeout` (see [`super::read_body`]).
//! * **Connection cap**: at most `max_connections` are served at once; the next one is accepted
//!   when one closes, so a flood of idle connections queues in the kernel instead of holding
//!   memory, and the timeouts above free slots for honest clients.
//! * **`Expect: 100-continue`**: hyper sends `100 Continue` only when the body is first read,
//!   and the body is read only after the bearer token was checked.
//!
//! On shutdown the listener stops accepting and lets requests in flight finish (bounded).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long requests in flight may take to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// What the listener allows each client.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let service = TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %err, "admin API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Answers are small writes on kept-alive connections: no Nagle delay.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "admin API: cannot set TCP_NODELAY");
        }
        let connection = builder.serve_connection(TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "admin API connection ended with an error");
            }
            drop(slot);
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin API: requests still in flight after {DRAIN:?}; closing them");
    }
}
