//! An example webhook receiver: verifies both Hookgate signatures and prints each event.
//!
//! This is the merchant's side of the contract, written without any Hookgate code:
//!
//! * `x-webhook-signature`: lowercase hex HMAC-SHA256 of the raw body, keyed with the secret text
//!   (during a secret rotation `x-webhook-signature-previous` carries the old secret's, so a
//!   receiver still on the old secret matches that one);
//! * `webhook-signature`: Standard Webhooks — `v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>`
//!   with key = base64-decode of the secret after `whsec_`; several space-separated during a
//!   secret rotation (any one matching is enough). Stale timestamps are refused (replay defence).
//!
//! Usage: `hookgate-receiver [ADDR] ` with the secret in `WEBHOOK_SECRET`
//! (default address 127.0.0.1:9000). It answers 204 to verified requests and 401 otherwise.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// Largest clock difference accepted between sender and receiver.
const TOLERANCE_SECS: u64 = 5 * 60;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".to_owned())
        .parse()?;
    let secret = std::env::var("WEBHOOK_SECRET")
        .map_err(|_| "set WEBHOOK_SECRET to the endpoint's secret")?;
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("receiver: listening on http://{}", listener.local_addr()?);
    let secret: &'static str = Box::leak(secret.into_boxed_str());
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(request, secret));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    secret: &str,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let path = request.uri().path().to_owned();
    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
    let (standard, legacy) = (header("webhook-signature"), header("x-webhook-signature"));
    let legacy_previous = header("x-webhook-signature-previous");
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    let verdict = verify_legacy(secret, &body, &[&legacy, &legacy_previous])
        .and_then(|()| verify_standard(secret, &id, &timestamp, &body, &standard));
    match verdict {
        Ok(()) => {
            println!(
                "receiver: verified {path} {id}: {}",
                String::from_utf8_lossy(&body)
            );
            Ok(reply(StatusCode::NO_CONTENT, ""))
        }
        Err(reason) => {
            println!("receiver: REJECTED {path} {id}: {reason}");
            Ok(reply(StatusCode::UNAUTHORIZED, reason))
        }
    }
}

/// Any of the presented legacy signatures (current, and previous during a rotation) matching
/// is enough.
fn verify_legacy(secret: &str, body: &[u8], presented: &[&str]) -> Result<(), &'static str> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| "bad key")?;
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    let matches = presented
        .iter()
        .filter(|presented| !presented.is_empty())
        .any(|presented| bool::from(expected.as_bytes().ct_eq(presented.as_bytes())));
    if matches {
        Ok(())
    } else {
        Err("x-webhook-signature does not match")
    }
}

fn verify_standard(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    presented: &str,
) -> Result<(), &'static str> {
    let sent: u64 = timestamp
        .parse()
        .map_err(|_| "webhook-timestamp is missing")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "clock")?
        .as_secs();
    if now.abs_diff(sent) > TOLERANCE_SECS {
        return Err("webhook-timestamp is too far from now");
    }
    let key = match secret.strip_prefix("whsec_") {
        Some(encoded) => BASE64.decode(encoded).map_err(|_| "secret is not base64")?,
        None => secret.as_bytes().to_vec(),
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| "bad key")?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    let matches = presented
        .split(' ')
        .any(|candidate| bool::from(candidate.as_bytes().ct_eq(expected.as_bytes())));
    if matches {
        Ok(())
    } else {
        Err("webhook-signature does not match")
    }
}

fn reply(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
