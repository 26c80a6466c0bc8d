//! How the delivery engine uses connections, end to end: keep-alive reuse, receivers that
//! close kept-alive connections, and `https` receivers whose certificate is or is not trusted.
//! Every receiver is a real server on loopback; certificates are made fresh by each test.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Gateway, Receiver, Reply, SECRET, delivery_to, endpoint, signatures};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(15);

fn order(n: usize) -> Value {
    json!({"order": n, "amount": "1.5"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_reuses_its_connection_for_the_next_attempt() {
    let receiver = Receiver::ok().await;
    let gateway = Gateway::start(&endpoint(
        "orders",
        &receiver.url("/hook"),
        "concurrency = 2",
    ))
    .await;

    let events: Vec<(&str, Value)> = (0..40).map(|n| ("order.paid", order(n))).collect();
    gateway.publish_batch(&events).await;
    let received = receiver.wait_for_count("/hook", 40, WAIT).await;

    // Two workers, so at most two connections carried all forty requests.
    let mut connections: Vec<usize> = received.iter().map(|request| request.connection).collect();
    connections.sort_unstable();
    connections.dedup();
    assert!(
        connections.len() <= 2,
        "40 deliveries with concurrency 2 used connections {connections:?}"
    );
    assert_eq!(receiver.connections(), connections.len());
}

/// What [`start_raw_receiver`] does after reading a request.
#[derive(Clone, Copy)]
enum Then {
    /// Closes the socket without a `Connection: close` header, as servers do when a
    /// kept-alive connection idles out.
    Close,
    /// Keeps the socket open and sends nothing more.
    Hang,
}

/// A hand-written HTTP/1.1 receiver: reads one request per connection, writes `answer`, then
/// does what `then` says. Counts accepted connections.
async fn start_raw_receiver(
    answer: &'static [u8],
    then: Then,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Read the head, then as much body as content-length says.
                loop {
                    let Ok(read) = stream.read(&mut buffer).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|line| line.strip_prefix("content-length:"))
                            .and_then(|value| value.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let _ = stream.write_all(answer).await;
                match then {
                    Then::Close => {
                        let _ = stream.shutdown().await;
                    }
                    // Held until the client gives up and closes its end.
                    Then::Hang => {
                        let _ = stream.read(&mut buffer).await;
                    }
                }
            });
        }
    });
    (url, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_closing_kept_alive_connections_costs_no_failed_attempt() {
    let (url, accepted) =
        start_raw_receiver(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", Then::Close).await;
    let gateway = Gateway::start(&endpoint("orders", &url, "concurrency = 1")).await;

    // One at a time, so each delivery finds the connection the previous one left, now closed.
    for n in 0..5 {
        let event = gateway.publish("order.paid", order(n)).await;
        let delivery_id = delivery_to(&event, "orders");
        let delivery = gateway
            .wait_for_delivery_status(&delivery_id, "delivered", WAIT)
            .await;
        assert_eq!(
            delivery["attempt_count"], 1,
            "delivery {n} needed a retry: {delivery:#}"
        );
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        5,
        "each delivery should have opened a fresh connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_whose_body_stalls_is_delivered_with_what_arrived() {
    let (url, _) = start_raw_receiver(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nreceived, still writing",
        Then::Hang,
    )
    .await;
    let gateway = Gateway::start(&endpoint(
        "orders",
        &url,
        "request_timeout = \"500ms\"\nretry_schedule = [\"0s\", \"100ms\"]",
    ))
    .await;

    let event = gateway.publish("order.paid", order(1)).await;
    let delivery = gateway
        .wait_for_delivery_status(&delivery_to(&event, "orders"), "delivered", WAIT)
        .await;
    // The status line is the receiver's answer: no retry for a body that never finished.
    assert_eq!(delivery["attempt_count"], 1, "{delivery:#}");
    let attempt = &delivery["attempts"][0];
    assert_eq!(attempt["status_code"], 200, "{delivery:#}");
    assert_eq!(
        attempt["response_snippet"], "received, still writing",
        "{delivery:#}"
    );
    assert!(
        attempt["latency_ms"].as_u64().unwrap_or_default() >= 400,
        "the body was waited for until the attempt's deadline: {delivery:#}"
    );
}

/// A certificate authority and a server certificate for 127.0.0.1 that it signed.
struct TestPki {
    ca_pem: String,
    server: tokio_rustls::TlsAcceptor,
}

fn server_acceptor(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: &rcgen::KeyPair,
) -> tokio_rustls::TlsAcceptor {
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .expect("a PKCS#8 private key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("a server certificate");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn test_pki() -> TestPki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hookgate test CA");
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("the CA certificate");
    let server_key = rcgen::KeyPair::generate().expect("a server key");
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&server_key, &ca)
        .expect("the server certificate");
    TestPki {
        ca_pem: ca.pem(),
        server: server_acceptor(server_cert.der().clone(), &server_key),
    }
}

/// A receiver with a self-signed certificate nobody trusts.
fn stranger_acceptor() -> tokio_rustls::TlsAcceptor {
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("a self-signed certificate");
    server_acceptor(cert.der().clone(), &key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receivers_are_verified_against_the_trusted_roots() {
    let pki = test_pki();
    let trusted = Receiver::start_tls(pki.server.clone(), |_| Reply::ok()).await;
    let stranger = Receiver::start_tls(stranger_acceptor(), |_| Reply::ok()).await;
    let roots = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(roots.path(), &pki.ca_pem).expect("writing the CA bundle");
    let no_retries = "retry_schedule = [\"0s\"]";
    let config = endpoint("trusted", &trusted.url("/hook"), no_retries)
        + &endpoint("stranger", &stranger.url("/hook"), no_retries);
    // On Linux the platform verifier reads the roots from SSL_CERT_FILE when it is set.
    let gateway = Gateway::start_with_env(
        &config,
        &[(
            "SSL_CERT_FILE",
            roots.path().to_str().expect("a UTF-8 path"),
        )],
    )
    .await;

    let event = gateway.publish("order.paid", order(1)).await;
    let event_id = event["id"].as_str().expect("an event id");
    let received = trusted.wait_for_event("/hook", event_id, WAIT).await;
    signatures::assert_signed_by(SECRET, &received[0]);
    gateway
        .wait_for_delivery_status(&delivery_to(&event, "trusted"), "delivered", WAIT)
        .await;

    let refused = gateway
        .wait_for_delivery_status(&delivery_to(&event, "stranger"), "dead_lettered", WAIT)
        .await;
    let error = refused["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("TLS handshake failed") && error.contains("certificate"),
        "the attempt should say the certificate was refused: {refused:#}"
    );
    assert!(stranger.requests().is_empty(), "nothing was sent to it");
}
