//! One signed HTTP attempt.
//!
//! Each worker sends over its own kept-alive connection ([`Connection`]). Redirects are not
//! followed: a 3xx is a failed attempt, as a receiver that moved must be re-registered rather
//! than silently followed with signed payloads.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT,
};

use crate::delivery::connection::{Connection, Connector, SendError};
use crate::delivery::policy::parse_retry_after;
use crate::delivery::{AttemptResult, Endpoint};
use crate::queue::ReadyDelivery;
use crate::signing;
use crate::store::AttemptRecord;
use crate::time::now_millis;

/// The most response body kept with an attempt.
pub const SNIPPET_LIMIT: usize = 1024;

const AGENT: &str = concat!("hookgate/", env!("CARGO_PKG_VERSION"));

/// Makes signed attempts; cheap to clone, one [`Connection`] per worker.
#[derive(Clone)]
pub struct HttpSender {
    connector: Connector,
}

impl HttpSender {
    /// Connections time out after `connect_timeout` and reach only what `egress` admits.
    pub fn new(
        connect_timeout: Duration,
        egress: crate::delivery::egress::EgressGuard,
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            connector: Connector::new(connect_timeout, egress)?,
        })
    }

    /// A connection slot for one worker.
    pub fn connection(&self) -> Connection {
        Connection::new(self.connector.clone())
    }

    /// Makes one attempt over `connection` and describes it for the store and the retry
    /// policy. The whole attempt, connecting included, is bounded by the endpoint's timeout.
    pub async fn attempt(
        &self,
        endpoint: &Endpoint,
        delivery: &ReadyDelivery,
        connection: &mut Connection,
    ) -> (AttemptRecord, AttemptResult) {
        let at = now_millis();
        let request = build_request(endpoint, delivery, at);
        let started = Instant::now();
        // One deadline for the whole attempt: connecting, the answer's head, then its body.
        let deadline = tokio::time::Instant::now() + endpoint.request_timeout;
        let sent =
            tokio::time::timeout_at(deadline, connection.send(&endpoint.target, request)).await;
        let (result, status_code, response_snippet) = match sent {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, SystemTime::now()));
                // The status is the receiver's answer; a body that breaks off or stalls only
                // shortens the snippet.
                let mut kept = Vec::new();
                let read = connection.read_body(response.into_body(), SNIPPET_LIMIT, &mut kept);
                if tokio::time::timeout_at(deadline, read).await.is_err() {
                    connection.reset();
                }
                // Cutting at 1 KiB may split a UTF-8 sequence: decode lossily, never drop.
                let snippet =
                    (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned());
                (
                    AttemptResult::Response {
                        status,
                        retry_after,
                    },
                    Some(status),
                    snippet,
                )
            }
            Ok(Err(err)) => (
                AttemptResult::Failed {
                    error: describe(&err),
                },
                None,
                None,
            ),
            Err(_) => {
                connection.reset();
                let error = format!("request timed out after {:?}", endpoint.request_timeout);
                (AttemptResult::Failed { error }, None, None)
            }
        };
        let error = match &result {
            AttemptResult::Response { status, .. } if (200..300).contains(status) => None,
            other => Some(other.describe()),
        };
        let record = AttemptRecord {
            number: delivery.attempt_number,
            at,
            status_code,
            latency_ms: started.elapsed().as_millis() as u64,
            error,
            response_snippet,
        };
        (record, result)
    }
}

/// The signed `POST` of a delivery's stored body, made at `at`.
fn build_request(
    endpoint: &Endpoint,
    delivery: &ReadyDelivery,
    at: u64,
) -> hyper::Request<Full<Bytes>> {
    let timestamp = at / 1000;
    let mut id_text = [0; 36];
    let webhook_id = delivery.event_id.encode(&mut id_text);
    let signatures = signing::sign(
        &endpoint.key,
        endpoint.previous_key_at(at),
        webhook_id,
        timestamp,
        &delivery.body,
    );
    let mut headers = HeaderMap::with_capacity(10 + delivery.headers.len());
    headers.insert(HOST, endpoint.target.host_header.clone());
    headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
    // Values built by the host are ASCII by construction; plugin headers were checked when
    // the plugin produced them. A value that still fails is left out rather than sent broken.
    let mut put = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.append(name, value);
        }
    };
    put(CONTENT_TYPE, &delivery.content_type);
    put(HeaderName::from_static("webhook-id"), webhook_id);
    put(
        HeaderName::from_static("webhook-timestamp"),
        &timestamp.to_string(),
    );
    put(
        HeaderName::from_static("webhook-signature"),
        &signatures.standard,
    );
    put(
        HeaderName::from_static("x-webhook-signature"),
        &signatures.legacy,
    );
    if let Some(previous) = &signatures.legacy_previous {
        put(
            HeaderName::from_static("x-webhook-signature-previous"),
            previous,
        );
    }
    for (name, value) in &delivery.headers {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            put(name, value);
        }
    }
    let mut request = hyper::Request::new(Full::new(delivery.body.clone()));
    *request.method_mut() = hyper::Method::POST;
    *request.uri_mut() = endpoint.target.path.clone();
    *request.headers_mut() = headers;
    request
}

/// A one-line reason for a transport failure, with the underlying causes.
fn describe(err: &SendError) -> String {
    use std::error::Error as _;
    let mut text = match err {
        SendError::Connect(_) => err.to_string(),
        SendError::Http(http) if http.is_incomplete_message() => {
            "request failed: the receiver closed the connection before answering".to_owned()
        }
        SendError::Http(_) => format!("request failed: {err}"),
    };
    let mut source = err.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
