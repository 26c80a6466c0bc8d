//! One signed HTTP attempt.
//!
//! The client is shared by every worker, so connections to the same receiver are pooled and
//! kept alive. Redirects are not followed: a 3xx is a failed attempt, as a receiver that moved
//! must be re-registered rather than silently followed with signed payloads.

use std::error::Error as _;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};

use crate::delivery::policy::parse_retry_after;
use crate::delivery::{AttemptResult, Endpoint};
use crate::queue::ReadyDelivery;
use crate::signing;
use crate::store::AttemptRecord;
use crate::time::now_millis;

/// The most response body kept with an attempt.
pub const SNIPPET_LIMIT: usize = 1024;

const AGENT: &str = concat!("hookgate/", env!("CARGO_PKG_VERSION"));

/// Sends attempts over a pooled reqwest client.
#[derive(Clone)]
pub struct HttpSender {
    client: reqwest::Client,
}

impl HttpSender {
    pub fn new(connect_timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { client })
    }

    /// Makes one attempt and describes it for the store and the retry policy.
    pub async fn attempt(
        &self,
        endpoint: &Endpoint,
        delivery: &ReadyDelivery,
    ) -> (AttemptRecord, AttemptResult) {
        let at = now_millis();
        let timestamp = at / 1000;
        let webhook_id = delivery.event_id.to_string();
        let signatures = signing::sign(
            &endpoint.key,
            endpoint.previous_key_at(at),
            &webhook_id,
            timestamp,
            &delivery.body,
        );
        let mut request = self
            .client
            .post(endpoint.url.clone())
            .timeout(endpoint.request_timeout)
            .header(CONTENT_TYPE, delivery.content_type.as_str())
            .header(USER_AGENT, HeaderValue::from_static(AGENT))
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signatures.standard)
            .header("x-webhook-signature", signatures.legacy);
        if let Some(previous) = signatures.legacy_previous {
            request = request.header("x-webhook-signature-previous", previous);
        }
        for (name, value) in &delivery.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let started = Instant::now();
        let outcome = match request.body(delivery.body.clone()).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, SystemTime::now()));
                let snippet = read_snippet(response).await;
                (
                    AttemptResult::Response {
                        status,
                        retry_after,
                    },
                    Some(status),
                    snippet,
                )
            }
            Err(err) => {
                let error = describe_error(&err, endpoint.request_timeout);
                (AttemptResult::Failed { error }, None, None)
            }
        };
        let (result, status_code, response_snippet) = outcome;
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

/// Reads at most [`SNIPPET_LIMIT`] bytes of the body; a slow or broken body ends the snippet.
async fn read_snippet(mut response: reqwest::Response) -> Option<String> {
    let mut kept = Vec::new();
    while kept.len() < SNIPPET_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = SNIPPET_LIMIT - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    if kept.is_empty() {
        return None;
    }
    // Cutting at 1 KiB may split a UTF-8 sequence: decode lossily rather than drop the text.
    Some(String::from_utf8_lossy(&kept).into_owned())
}

/// A one-line reason for a transport failure, with the underlying cause.
fn describe_error(err: &reqwest::Error, timeout: Duration) -> String {
    let kind = if err.is_timeout() {
        format!("request timed out after {timeout:?}")
    } else if err.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut causes = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        kind
    } else {
        format!("{kind}: {}", causes.join(": "))
    }
}
