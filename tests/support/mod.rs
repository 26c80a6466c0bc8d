//! Shared parts of the end-to-end tests: the real `hookgate` binary, a real HTTP receiver, and
//! signature checks written from the spec rather than borrowed from the host.
//!
//! * [`Gateway`] runs `hookgate serve` as a child process on a config and redb file in its own
//!   temporary directory, talks to its admin API over loopback, and can `kill -9` and restart it
//!   on the same file. The child's stderr goes to `hookgate.log` in that directory and is printed
//!   when a test fails, so a red test shows what the gateway was doing.
//! * [`Receiver`] is a hyper HTTP/1.1 server on `127.0.0.1:0` that records every request and
//!   answers as the test programs it (status, headers, body, a delay to play a hanging receiver).
//!   Tests wait on it with a deadline and a predicate; it wakes waiters on every request, so no
//!   test sleeps to synchronise.
//! * [`signatures`] recomputes both signatures with `hmac`/`sha2`/`base64` directly.
//!
//! The store under the gateway is the redb file unless `HOOKGATE_TEST_BACKEND=postgres`: then
//! each gateway gets a fresh database of the throwaway PostgreSQL cluster ([`postgres`]), so
//! one suite checks both backends (`tests/run.sh` runs the delivery and crash suites twice).
//!
//! Each test file compiles this module into its own crate and uses a different subset of it.
#![allow(dead_code)]

pub mod chain;
pub mod counting;
pub mod measure;
#[path = "postgres.rs"]
pub mod postgres;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// The admin token every test gateway is configured with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A `whsec_` secret (24 random bytes) for endpoints in tests.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A second `whsec_` secret, used as the one being rotated out.
pub const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// What the gateway prints on stdout once the admin API accepts connections.
const READY_PREFIX: &str = "hookgate: admin API listening on http://";

/// How long the binary may take to print its ready line.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Lines of the gateway's log shown when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// A running `hookgate serve` process and an authenticated client for its admin API.
pub struct Gateway {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub base_url: String,
    client: reqwest::Client,
}

/// An admin API answer, read whole.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The body parsed as JSON; `Value::Null` when it is empty or not JSON (see `text`).
    pub json: Value,
    pub text: String,
}

impl ApiResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts the answer is the JSON error shape with `status` and `code` and a message that
    /// says something, and returns the message.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status, status,
            "expected status {status}, got {self:#?}"
        );
        assert_eq!(
            self.json["error"]["code"], code,
            "expected error code `{code}`, got {self:#?}"
        );
        let message = self.json["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("error without a message: {self:#?}"));
        assert!(!message.trim().is_empty(), "empty error message: {self:#?}");
        message.to_owned()
    }
}

/// Which store the gateways of this test run use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redb,
    Postgres,
}

/// `HOOKGATE_TEST_BACKEND`: `postgres`, or the redb default when unset.
pub fn test_backend() -> Backend {
    match std::env::var("HOOKGATE_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("redb") | Err(_) => Backend::Redb,
        Ok(other) => panic!("HOOKGATE_TEST_BACKEND is `{other}`: use `redb` or `postgres`"),
    }
}

impl Gateway {
    /// Starts the binary on `sections`: the config file's `[delivery]` and `[[endpoints]]`
    /// tables. The support adds `[server]` (loopback, port 0, [`ADMIN_TOKEN`]) and `[store]`
    /// (a redb file in a fresh temporary directory).
    pub async fn start(sections: &str) -> Self {
        Self::start_with_env(sections, &[]).await
    }

    /// Like [`Gateway::start`], with extra environment variables for the process.
    pub async fn start_with_env(sections: &str, env: &[(&str, &str)]) -> Self {
        Self::launch("", "", sections, env).await
    }

    /// Like [`Gateway::start`], with extra `[server]` settings (`key = value` lines).
    pub async fn start_with_server(server: &str, sections: &str) -> Self {
        Self::launch(server, "", sections, &[]).await
    }

    /// Like [`Gateway::start`], with extra `[store]` settings (`key = value` lines).
    pub async fn start_with_store(store: &str, sections: &str) -> Self {
        Self::launch("", store, sections, &[]).await
    }

    /// A node on the PostgreSQL database at `url` (several nodes may share one), with
    /// `sections` as in [`Gateway::start`].
    pub async fn start_node(url: &str, sections: &str) -> Self {
        let store = format!("backend = \"postgres\"\nurl = \"{url}\"\npool_size = 4");
        Self::launch("", &store, sections, &[]).await
    }

    async fn launch(server: &str, store: &str, sections: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let config_path = dir.path().join("hookgate.toml");
        let store_path = dir.path().join("hookgate.redb");
        // Receivers in tests listen on 127.0.0.1, which the egress guard refuses unless it is
        // allowed; a test of the guard brings its own `[egress]`.
        let egress = if sections.contains("[egress]") {
            ""
        } else {
            "[egress]\nallowed_networks = [\"127.0.0.1\"]\n\n"
        };
        let backend = match test_backend() {
            // The caller chose the database (a node of several).
            _ if store.contains("backend =") => String::new(),
            Backend::Redb => String::new(),
            Backend::Postgres => format!(
                "backend = \"postgres\"\nurl = \"{}\"\npool_size = 4\n",
                postgres::cluster().fresh_database().await
            ),
        };
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN_TOKEN}\"\n{server}\n\n\
             [store]\npath = '{}'\n{backend}{store}\n\n{egress}{sections}",
            store_path.display()
        );
        std::fs::write(&config_path, config).expect("writing the config file");
        let mut gateway = Self {
            log_path: dir.path().join("hookgate.log"),
            dir,
            config_path,
            env: env
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            child: None,
            base_url: String::new(),
            client: http_client(),
        };
        gateway.spawn().await;
        gateway
    }

    /// Spawns the process and waits for its ready line.
    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("opening the gateway log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookgate"));
        command
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .env_remove("HOOKGATE_CONFIG")
            .env_remove("HOOKGATE_LISTEN")
            .env_remove("HOOKGATE_ADMIN_TOKEN")
            .env_remove("HOOKGATE_DB")
            .env_remove("WEBHOOK_URL")
            .env_remove("WEBHOOK_SECRET")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawning the hookgate binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready_tx, mut ready_rx) = watch::channel(None::<String>);
        // Reads stdout for the ready line, then keeps draining so the pipe never fills up.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(address) = line.strip_prefix(READY_PREFIX) {
                    let _ = ready_tx.send(Some(address.trim().to_owned()));
                }
            }
        });
        let started = Instant::now();
        let address = loop {
            if let Some(address) = ready_rx.borrow_and_update().clone() {
                break address;
            }
            let remaining = START_DEADLINE.saturating_sub(started.elapsed());
            match tokio::time::timeout(remaining, ready_rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => {
                    let status = child.wait().await;
                    panic!(
                        "hookgate exited before printing `{READY_PREFIX}…` ({status:?}); log:\n{}",
                        self.log_tail()
                    );
                }
                Err(_) => panic!(
                    "hookgate did not print `{READY_PREFIX}…` within {START_DEADLINE:?}; log:\n{}",
                    self.log_tail()
                ),
            }
        };
        self.base_url = format!("http://{address}");
        self.child = Some(child);
    }

    /// The temporary directory holding the config, the redb file and the log.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The process id of the running gateway.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("the gateway is running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The admin address as `host:port`, for raw TCP.
    pub fn address(&self) -> SocketAddr {
        self.base_url
            .trim_start_matches("http://")
            .parse()
            .expect("the ready line carries a socket address")
    }

    /// SIGKILL, then reap: nothing in the process gets to run, flush or clean up.
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("the gateway is running");
        child.kill().await.expect("sending SIGKILL to hookgate");
    }

    /// Adds `text` to the end of the config file; takes effect at the next [`Gateway::restart`].
    pub fn append_config(&self, text: &str) {
        let mut config = std::fs::read_to_string(&self.config_path).expect("reading the config");
        config.push_str(text);
        std::fs::write(&self.config_path, config).expect("writing the config");
    }

    /// Starts the binary again on the same config and redb file (after [`Gateway::kill9`]).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart after kill9");
        self.spawn().await;
    }

    /// Any method on `path` with the admin token and, when given, a JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> ApiResponse {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body).expect("serialising a JSON body"));
        }
        read_response(request.send().await).await
    }

    /// `POST path` with a JSON body and the admin token.
    pub async fn post_json(&self, path: &str, body: &Value) -> ApiResponse {
        self.post_json_with(path, body, &[]).await
    }

    /// `POST path` with a JSON body, the admin token and extra headers.
    pub async fn post_json_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> ApiResponse {
        let body = serde_json::to_vec(body).expect("serialising a JSON body");
        self.post_raw(path, body, headers).await
    }

    /// `POST path` with raw body bytes declared as JSON, the admin token and extra headers.
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> ApiResponse {
        let mut request = self
            .client
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read_response(request.send().await).await
    }

    /// `POST path` with a JSON body already encoded; returns the status and the raw answer.
    /// For the benchmark, which parses only what it needs.
    pub async fn post_bytes(&self, path: &str, body: bytes::Bytes) -> (u16, bytes::Bytes) {
        let response = self
            .client
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("sending a request to the admin API");
        let status = response.status().as_u16();
        let answer = response.bytes().await.expect("reading an admin API answer");
        (status, answer)
    }

    /// A handle that can `POST` to this gateway from another task, and fails instead of
    /// panicking when the gateway is gone (for requests racing a `kill -9`).
    pub fn poster(&self) -> Poster {
        Poster {
            client: self.client.clone(),
            base_url: self.base_url.clone(),
        }
    }

    /// `GET path` with the admin token.
    pub async fn get_json(&self, path: &str) -> ApiResponse {
        let request = self.client.get(self.url(path)).bearer_auth(ADMIN_TOKEN);
        read_response(request.send().await).await
    }

    /// Any request, as built by the caller (for auth tests): no token is added.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> ApiResponse {
        read_response(request.send().await).await
    }

    /// A client without the admin token, for building requests passed to [`Gateway::send`].
    pub fn raw_client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Publishes one event and returns the 201 answer's JSON.
    pub async fn publish(&self, event_type: &str, data: Value) -> Value {
        let answer = self
            .post_json(
                "/v1/events",
                &serde_json::json!({"type": event_type, "data": data}),
            )
            .await;
        assert_eq!(answer.status, 201, "publishing an event: {answer:#?}");
        answer.json
    }

    /// Publishes a batch (`[(type, data)]`) and returns the answer's `events` array.
    pub async fn publish_batch(&self, events: &[(&str, Value)]) -> Vec<Value> {
        let events: Vec<Value> = events
            .iter()
            .map(|(event_type, data)| serde_json::json!({"type": event_type, "data": data}))
            .collect();
        let answer = self
            .post_json("/v1/events/batch", &serde_json::json!({"events": events}))
            .await;
        assert_eq!(answer.status, 201, "publishing a batch: {answer:#?}");
        answer.json["events"]
            .as_array()
            .unwrap_or_else(|| panic!("batch answer without `events`: {answer:#?}"))
            .clone()
    }

    /// `GET /v1/deliveries/{id}`, asserting 200.
    pub async fn delivery(&self, id: &str) -> Value {
        let answer = self.get_json(&format!("/v1/deliveries/{id}")).await;
        assert_eq!(answer.status, 200, "reading delivery {id}: {answer:#?}");
        answer.json
    }

    /// Polls a delivery until its `status` is `status`.
    pub async fn wait_for_delivery_status(
        &self,
        id: &str,
        status: &str,
        within: Duration,
    ) -> Value {
        poll_until(
            within,
            &format!("delivery {id} to be {status}"),
            || self.delivery(id),
            |delivery| delivery["status"] == status,
        )
        .await
    }

    /// `PUT /v1/plugins/{name}` with `bytes` as the component.
    #[allow(dead_code)] // Not every test binary uploads plugins.
    pub async fn upload_plugin(&self, name: &str, bytes: Vec<u8>) -> ApiResponse {
        let request = self
            .raw_client()
            .put(self.url(&format!("/v1/plugins/{name}")))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/wasm")
            .body(bytes);
        self.send(request).await
    }

    /// The gateway's warnings and errors so far (its stderr lines at those levels).
    #[allow(dead_code)] // Not every test binary reads them.
    pub fn log_problems(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        log.lines()
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .map(str::to_owned)
            .collect()
    }

    /// The last lines of the gateway's stderr.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of the hookgate log ({}) ----\n{}",
                self.log_path.display(),
                self.log_tail()
            );
        }
    }
}

/// A plain-HTTP reqwest client with a timeout, so a stuck gateway fails a test instead of
/// hanging it.
pub fn http_client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`; plain http needs no provider, but building the
    // client may still look for one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("building the HTTP client")
}

/// Posts JSON to one gateway process; see [`Gateway::poster`].
#[derive(Clone)]
pub struct Poster {
    client: reqwest::Client,
    base_url: String,
}

impl Poster {
    /// `POST path` with a JSON body and the admin token; `Err` when no whole answer came back.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Result<ApiResponse> {
        let response = self
            .client
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).expect("serialising a JSON body"))
            .send()
            .await?;
        try_read_response(response).await
    }
}

async fn read_response(sent: reqwest::Result<reqwest::Response>) -> ApiResponse {
    let response = sent.expect("sending a request to the admin API");
    try_read_response(response)
        .await
        .expect("reading an admin API answer")
}

async fn try_read_response(response: reqwest::Response) -> reqwest::Result<ApiResponse> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(ApiResponse {
        status,
        headers,
        json,
        text,
    })
}

/// Calls `probe` every 20 ms until `done` holds for its value, and returns that value. Panics
/// after `within`, showing the last value seen.
pub async fn poll_until<T, F, Fut>(
    within: Duration,
    what: &str,
    mut probe: F,
    done: impl Fn(&T) -> bool,
) -> T
where
    T: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + within;
    loop {
        let value = probe().await;
        if done(&value) {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}; last value seen: {value:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The unix time now, in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Whether `id` is `prefix` followed by 32 lowercase hex digits.
pub fn is_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 32 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    })
}

/// Whether `text` is an RFC 3339 date-time: `2026-11-22T10:00:00Z`, optionally with fractional
/// seconds and a numeric offset instead of `Z`.
pub fn is_rfc3339(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    if !(digits(0..4)
        && bytes.get(4) == Some(&b'-')
        && digits(5..7)
        && bytes.get(7) == Some(&b'-')
        && digits(8..10)
        && matches!(bytes.get(10), Some(b'T' | b't'))
        && digits(11..13)
        && bytes.get(13) == Some(&b':')
        && digits(14..16)
        && bytes.get(16) == Some(&b':')
        && digits(17..19))
    {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return false;
        }
        rest = &fraction[len..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()),
        _ => false,
    }
}

/// A TOML `[[endpoints]]` table for `id` at `url` with [`SECRET`] and `extra` lines
/// (like `retry_schedule = ["0s", "100ms"]`).
pub fn endpoint(id: &str, url: &str, extra: &str) -> String {
    format!("[[endpoints]]\nid = \"{id}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n{extra}\n\n")
}

/// What one request to the [`Receiver`] is, as its behaviour sees it.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    /// 1 for the first request on this path, 2 for the next, …
    pub nth_on_path: usize,
    /// 1 for the first request on this path with this `webhook-id`, 2 for its retry, …
    pub attempt: usize,
    pub webhook_id: Option<String>,
}

/// How the [`Receiver`] answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Waits this long before answering (a slow or hanging receiver).
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn ok() -> Self {
        Self::status(200)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request the [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The receiver's count of the connection it came on: 1 for the first accepted, …
    pub connection: usize,
    /// When the whole request had been read.
    pub arrived: Instant,
    /// When the receiver handed its answer to hyper; `None` while it is still waiting.
    pub answered: Option<Instant>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn webhook_id(&self) -> Option<&str> {
        self.header("webhook-id")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("delivery body is not JSON ({err}): {self:#?}"))
    }
}

type Behaviour = dyn Fn(&Call) -> Reply + Send + Sync;

struct ReceiverState {
    connections: std::sync::atomic::AtomicUsize,
    behaviour: Box<Behaviour>,
    log: Mutex<Log>,
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Log {
    requests: Vec<Received>,
    per_path: HashMap<String, usize>,
    per_attempt: HashMap<(String, String), usize>,
    in_flight: HashMap<String, usize>,
    max_in_flight: HashMap<String, usize>,
}

/// A real HTTP/1.1 webhook receiver on loopback that records what it gets.
pub struct Receiver {
    address: SocketAddr,
    scheme: &'static str,
    state: Arc<ReceiverState>,
    accept: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// A receiver that answers 200 to everything at once.
    pub async fn ok() -> Self {
        Self::start(|_| Reply::ok()).await
    }

    /// A receiver that answers each request as `behaviour` says.
    pub async fn start(behaviour: impl Fn(&Call) -> Reply + Send + Sync + 'static) -> Self {
        Self::serve(None, behaviour).await
    }

    /// An `https` receiver presenting `acceptor`'s certificate.
    pub async fn start_tls(
        acceptor: tokio_rustls::TlsAcceptor,
        behaviour: impl Fn(&Call) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::serve(Some(acceptor), behaviour).await
    }

    async fn serve(
        tls: Option<tokio_rustls::TlsAcceptor>,
        behaviour: impl Fn(&Call) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the receiver");
        let address = listener.local_addr().expect("receiver address");
        let state = Arc::new(ReceiverState {
            behaviour: Box::new(behaviour),
            log: Mutex::new(Log::default()),
            changed: watch::channel(0).0,
            connections: std::sync::atomic::AtomicUsize::new(0),
        });
        let accept_state = state.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = accept_state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let connection = state
                        .connections
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                        + 1;
                    let service =
                        service_fn(move |request| handle(state.clone(), connection, request));
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        // A client that fails the handshake (distrusting the certificate)
                        // simply goes away.
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => {
                                http.serve_connection(TokioIo::new(stream), service).await
                            }
                            Err(_) => return,
                        },
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                    };
                });
            }
        });
        Self {
            address,
            scheme,
            state,
            accept,
        }
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.state
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.address)
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().requests.clone()
    }

    /// Requests received so far on `path`.
    pub fn requests_on(&self, path: &str) -> Vec<Received> {
        on_path(&self.state.log.lock().unwrap().requests, path)
    }

    /// The most requests that were being answered at once on `path`.
    pub fn max_in_flight(&self, path: &str) -> usize {
        let log = self.state.log.lock().unwrap();
        log.max_in_flight.get(path).copied().unwrap_or(0)
    }

    /// Waits until `check` returns `Some` for the requests received so far. Panics after
    /// `within`, describing what was received.
    pub async fn wait_for<T>(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&[Received]) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        let mut changed = self.state.changed.subscribe();
        loop {
            changed.borrow_and_update();
            if let Some(found) = check(&self.state.log.lock().unwrap().requests) {
                return found;
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                panic!(
                    "timed out after {within:?} waiting for {what}; received:\n{}",
                    self.summary()
                );
            }
        }
    }

    /// Waits until `path` has received `count` requests and returns them.
    pub async fn wait_for_count(
        &self,
        path: &str,
        count: usize,
        within: Duration,
    ) -> Vec<Received> {
        self.wait_for(within, &format!("{count} requests on {path}"), |requests| {
            let on = on_path(requests, path);
            (on.len() >= count).then_some(on)
        })
        .await
    }

    /// Waits until `path` has received a request with `webhook-id` = `event_id` and returns
    /// every such request.
    pub async fn wait_for_event(
        &self,
        path: &str,
        event_id: &str,
        within: Duration,
    ) -> Vec<Received> {
        self.wait_for(within, &format!("event {event_id} on {path}"), |requests| {
            let found: Vec<Received> = on_path(requests, path)
                .into_iter()
                .filter(|request| request.webhook_id() == Some(event_id))
                .collect();
            (!found.is_empty()).then_some(found)
        })
        .await
    }

    fn summary(&self) -> String {
        let log = self.state.log.lock().unwrap();
        let mut lines: Vec<String> = log
            .requests
            .iter()
            .take(40)
            .map(|request| {
                format!(
                    "  {} {} webhook-id={:?} body={}",
                    request.method,
                    request.path,
                    request.webhook_id(),
                    String::from_utf8_lossy(&request.body)
                        .chars()
                        .take(160)
                        .collect::<String>()
                )
            })
            .collect();
        lines.push(format!("  ({} requests in all)", log.requests.len()));
        lines.join("\n")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn on_path(requests: &[Received], path: &str) -> Vec<Received> {
    requests
        .iter()
        .filter(|request| request.path == path)
        .cloned()
        .collect()
}

/// One request being answered on a path.
struct InFlight {
    state: Arc<ReceiverState>,
    path: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut log = self.state.log.lock().unwrap();
        if let Some(count) = log.in_flight.get_mut(&self.path) {
            *count -= 1;
        }
    }
}

async fn handle(
    state: Arc<ReceiverState>,
    connection: usize,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let path = parts.uri.path().to_owned();
    let webhook_id = parts
        .headers
        .get("webhook-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let (index, call) = {
        let mut log = state.log.lock().unwrap();
        let nth_on_path = {
            let count = log.per_path.entry(path.clone()).or_default();
            *count += 1;
            *count
        };
        let attempt = {
            let key = (path.clone(), webhook_id.clone().unwrap_or_default());
            let count = log.per_attempt.entry(key).or_default();
            *count += 1;
            *count
        };
        let in_flight = {
            let count = log.in_flight.entry(path.clone()).or_default();
            *count += 1;
            *count
        };
        let max = log.max_in_flight.entry(path.clone()).or_default();
        *max = (*max).max(in_flight);
        log.requests.push(Received {
            method: parts.method.to_string(),
            path: path.clone(),
            headers: parts.headers,
            body,
            connection,
            arrived: Instant::now(),
            answered: None,
        });
        let call = Call {
            path: path.clone(),
            nth_on_path,
            attempt,
            webhook_id,
        };
        (log.requests.len() - 1, call)
    };
    state.changed.send_modify(|count| *count += 1);
    // Leaves the in-flight count right even when hyper drops this future mid-delay.
    let in_flight = InFlight {
        state: state.clone(),
        path,
    };
    let reply = (state.behaviour)(&call);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    state.log.lock().unwrap().requests[index].answered = Some(Instant::now());
    drop(in_flight);
    let mut response = hyper::Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    Ok(response
        .body(Full::new(Bytes::from(reply.body)))
        .expect("a valid programmed reply"))
}

/// Both webhook signatures, computed from the spec with `hmac`, `sha2` and `base64` directly.
pub mod signatures {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::Received;

    fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// `X-Webhook-Signature`: lowercase hex HMAC-SHA256 of the body, keyed by the secret text.
    pub fn legacy(secret: &str, body: &[u8]) -> String {
        hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
    }

    /// The Standard Webhooks key: base64 after `whsec_`, else the raw bytes.
    fn standard_key(secret: &str) -> Vec<u8> {
        match secret.strip_prefix("whsec_") {
            Some(encoded) => BASE64.decode(encoded).expect("a base64 whsec_ secret"),
            None => secret.as_bytes().to_vec(),
        }
    }

    /// One Standard Webhooks signature: `v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>`.
    pub fn standard(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
        let mac = hmac_sha256(
            &standard_key(secret),
            &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
        );
        format!("v1,{}", BASE64.encode(mac))
    }

    /// The entries of a request's `webhook-signature` header, in order.
    pub fn standard_entries(request: &Received) -> Vec<String> {
        request
            .header("webhook-signature")
            .unwrap_or_else(|| panic!("no webhook-signature header: {request:#?}"))
            .split(' ')
            .map(str::to_owned)
            .collect()
    }

    /// What the Standard Webhooks signature of `request` must be for `secret`.
    pub fn expected_standard(secret: &str, request: &Received) -> String {
        let id = request
            .header("webhook-id")
            .unwrap_or_else(|| panic!("no webhook-id header: {request:#?}"));
        let timestamp = request
            .header("webhook-timestamp")
            .unwrap_or_else(|| panic!("no webhook-timestamp header: {request:#?}"));
        standard(secret, id, timestamp, &request.body)
    }

    /// Asserts the request carries exactly one Standard signature and the legacy one, both
    /// made with `secret`, and nothing from a previous secret.
    pub fn assert_signed_by(secret: &str, request: &Received) {
        assert_eq!(
            standard_entries(request),
            vec![expected_standard(secret, request)],
            "webhook-signature does not verify with the endpoint secret"
        );
        assert_eq!(
            request.header("x-webhook-signature"),
            Some(legacy(secret, &request.body).as_str()),
            "x-webhook-signature does not verify with the endpoint secret"
        );
        assert_eq!(request.header("x-webhook-signature-previous"), None);
    }
}

/// A plugin component built by `cargo run -p hookgate-plugin-build` (`target/plugins/NAME.wasm`).
pub fn component(name: &str) -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first with `cargo run -p hookgate-plugin-build`",
        path.display()
    );
    path
}

/// The bytes of [`component`] `name`.
#[allow(dead_code)] // Not every test binary reads plugin bytes.
pub fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(component(name)).expect("reading a built plugin")
}

/// `name`'s entry in a `GET /v1/plugins` answer, `null` when it is not listed.
pub fn listed_plugin(list: &Value, name: &str) -> Value {
    list["plugins"]
        .as_array()
        .and_then(|plugins| plugins.iter().find(|plugin| plugin["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The id of the delivery to `endpoint_id` in a publish answer.
pub fn delivery_to(event: &Value, endpoint_id: &str) -> String {
    event["deliveries"]
        .as_array()
        .and_then(|deliveries| {
            deliveries
                .iter()
                .find(|delivery| delivery["endpoint_id"] == endpoint_id)
        })
        .and_then(|delivery| delivery["id"].as_str())
        .unwrap_or_else(|| panic!("no delivery to `{endpoint_id}` in {event:#}"))
        .to_owned()
}
