//! One loaded plugin version and the checked calls into it.
//!
//! Loading compiles (or reads the cache), links against the host's imports and type-checks the
//! exports against the world — a component for another world, or one missing an export, fails
//! here with the reason. Calls reuse warm instances kept per scope (the endpoint), so state a
//! plugin keeps in its memory never crosses endpoints; an instance is recycled after
//! [`MAX_CALLS_PER_INSTANCE`] calls and thrown away the moment a call traps, because a trapped
//! instance cannot be entered again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;
use wasmtime::{Store, Trap};

use crate::plugins::runtime::{
    CALL_DEADLINE_TICKS, Event, HostState, Limits, LogBudget, Outgoing, PluginRuntime,
    STDIO_CAPACITY, WebhookPlugin, WebhookPluginPre, thread_cpu_time,
};

/// Calls one instance serves before it is replaced by a fresh one.
pub const MAX_CALLS_PER_INSTANCE: u32 = 10_000;

/// Idle warm instances kept per scope.
const MAX_IDLE_PER_SCOPE: usize = 4;

/// Extra headers a transform may add; more is refused.
const MAX_EXTRA_HEADERS: usize = 32;

/// Longest value of one extra header.
const MAX_HEADER_VALUE: usize = 8 * 1024;

/// Headers a plugin may not set: the host sets them (content type, framing, signatures) or
/// they are hop-by-hop and would change how the request travels rather than what it says.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "content-encoding",
    "user-agent",
];

/// Whether a plugin may not set header `name` (any case).
fn is_reserved_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_HEADERS.contains(&lower.as_str())
        || lower.starts_with("proxy-")
        || lower.starts_with("webhook-")
        || lower.starts_with("x-webhook-")
}

/// Why a plugin could not be loaded or a call failed. Messages are meant for operators.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("the plugin engine failed: {0}")]
    Engine(String),
    #[error("not a usable WebAssembly component: {0}")]
    Invalid(String),
    #[error("does not fit the hookgate:plugin@0.1.0 `webhook-plugin` world: {0}")]
    WrongWorld(String),
    /// The call itself failed: trap, limit, or output the host refuses.
    #[error("{0}")]
    Call(String),
    /// The plugin ran fine and returned an error of its own.
    #[error("returned an error: {0}")]
    Rejected(String),
}

impl PluginError {
    pub(crate) fn engine(err: wasmtime::Error) -> Self {
        Self::Engine(format!("{err:#}"))
    }

    pub(crate) fn invalid(err: wasmtime::Error) -> Self {
        Self::Invalid(first_line(&format!("{err:#}")))
    }
}

/// What one plugin step decided.
pub enum StepOutcome {
    Drop,
    Keep(Outgoing),
}

struct Warm {
    store: Store<HostState>,
    bindings: WebhookPlugin,
    calls: u32,
}

/// A plugin version's name: the first 12 hex digits of the SHA-256 of its bytes.
pub fn version_of(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..6])
}

/// A compiled, type-checked plugin version, ready to call.
pub struct LoadedPlugin {
    pub name: String,
    /// The first 12 hex digits of the SHA-256 of the `.wasm` file.
    pub version: String,
    /// `name@version`, as recorded with every delivery it shaped.
    pub reference: Arc<str>,
    pub size: usize,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    /// The component's imports and exports, as `plugin check` prints them.
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pre: WebhookPluginPre<HostState>,
    runtime: Arc<PluginRuntime>,
    warm: Mutex<HashMap<String, Vec<Warm>>>,
}

impl LoadedPlugin {
    /// Compiles and type-checks `bytes` as plugin `name`. Does not run it: see [`Self::smoke_test`].
    pub fn load(
        runtime: &Arc<PluginRuntime>,
        name: &str,
        bytes: &[u8],
    ) -> Result<Self, PluginError> {
        let cap = runtime.limits().wasm_bytes;
        if bytes.len() > cap {
            return Err(PluginError::Invalid(too_large(bytes.len() as u64, cap)));
        }
        let (component, from_cache) = runtime.compile(bytes)?;
        let (imports, exports) = describe(&component, runtime);
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(|err| PluginError::WrongWorld(first_line(&format!("{err:#}"))))?;
        let pre = WebhookPluginPre::new(instance_pre)
            .map_err(|err| PluginError::WrongWorld(first_line(&format!("{err:#}"))))?;
        let version = version_of(bytes);
        Ok(Self {
            reference: format!("{name}@{version}").into(),
            name: name.to_owned(),
            version,
            size: bytes.len(),
            from_cache,
            imports,
            exports,
            pre,
            runtime: runtime.clone(),
            warm: Mutex::new(HashMap::new()),
        })
    }

    /// Calls both exports once on a sample event, off the hot path: a plugin that traps,
    /// loops, bloats or returns garbage is refused before it can replace a working version.
    /// An error the plugin returns itself (e.g. "missing config") is fine.
    pub fn smoke_test(&self) -> Result<(), PluginError> {
        let event = sample_event();
        let result = self.with_instance("smoke-test", async |bindings, store| {
            let filtered = bindings.call_filter(&mut *store, &event, "{}").await?;
            let transformed = bindings.call_transform(&mut *store, &event, "{}").await?;
            Ok((filtered, transformed))
        });
        let (_, transformed) = result?;
        if let Ok(outgoing) = transformed {
            validate_outgoing(&outgoing, &self.runtime.limits())?;
        }
        Ok(())
    }

    /// Runs the plugin's filter and, if it keeps the event, its transform, on one instance.
    pub fn run_step(
        &self,
        scope: &str,
        event: &Event,
        config: &str,
    ) -> Result<StepOutcome, PluginError> {
        let (keep, outgoing) = self.with_instance(scope, async |bindings, store| {
            let keep = bindings.call_filter(&mut *store, event, config).await?;
            if keep != Ok(true) {
                return Ok((keep, None));
            }
            let outgoing = bindings.call_transform(&mut *store, event, config).await?;
            Ok((keep, Some(outgoing)))
        })?;
        match (keep.map_err(PluginError::Rejected)?, outgoing) {
            (false, _) | (true, None) => Ok(StepOutcome::Drop),
            (true, Some(outgoing)) => {
                let outgoing = outgoing.map_err(PluginError::Rejected)?;
                validate_outgoing(&outgoing, &self.runtime.limits())?;
                Ok(StepOutcome::Keep(outgoing))
            }
        }
    }

    /// Only the filter, for `plugin run`.
    pub fn filter(&self, scope: &str, event: &Event, config: &str) -> Result<bool, PluginError> {
        self.with_instance(scope, async |bindings, store| {
            bindings.call_filter(store, event, config).await
        })?
        .map_err(PluginError::Rejected)
    }

    /// Only the transform, checked, for `plugin run`.
    pub fn transform(
        &self,
        scope: &str,
        event: &Event,
        config: &str,
    ) -> Result<Outgoing, PluginError> {
        let outgoing = self
            .with_instance(scope, async |bindings, store| {
                bindings.call_transform(store, event, config).await
            })?
            .map_err(PluginError::Rejected)?;
        validate_outgoing(&outgoing, &self.runtime.limits())?;
        Ok(outgoing)
    }

    /// Runs `call` on a warm (or fresh) instance of `scope`, within the CPU and wall-clock
    /// limits. An instance that failed or ran out of time is dropped, never reused.
    fn with_instance<R>(
        &self,
        scope: &str,
        call: impl AsyncFnOnce(&WebhookPlugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let limits = self.runtime.limits();
        bounded(limits.wall, async {
            let mut warm = match self.take_warm(scope) {
                Some(warm) => warm,
                None => self.instantiate(&limits).await?,
            };
            let state = warm.store.data_mut();
            state.call_cpu_start = thread_cpu_time();
            state.log_budget = LogBudget::fresh();
            warm.store.set_epoch_deadline(CALL_DEADLINE_TICKS);
            let result = call(&warm.bindings, &mut warm.store).await;
            let stdio_used = log_stdio(&mut warm.store);
            let budget = warm.store.data().log_budget;
            if budget.dropped_lines > 0 {
                tracing::warn!(
                    plugin = &*self.reference,
                    lines = budget.dropped_lines,
                    bytes = budget.dropped_bytes,
                    "plugin logged past its per-call budget; the rest was dropped"
                );
            }
            match result {
                Ok(value) => {
                    warm.calls += 1;
                    if warm.calls < MAX_CALLS_PER_INSTANCE && stdio_used < STDIO_CAPACITY / 2 {
                        self.put_warm(scope, warm);
                    }
                    Ok(value)
                }
                Err(err) => Err(PluginError::Call(describe_failure(&err, &limits))),
            }
        })
        .unwrap_or_else(|| {
            Err(PluginError::Call(format!(
                "exceeded its wall-clock limit ({:?}) and was stopped (blocked in a host call \
                 such as a sleep, or starved of CPU); the instance is discarded",
                limits.wall
            )))
        })
    }

    async fn instantiate(&self, limits: &Limits) -> Result<Warm, PluginError> {
        let mut store = self.runtime.new_store(self.reference.clone());
        store.data_mut().call_cpu_start = thread_cpu_time();
        store.set_epoch_deadline(CALL_DEADLINE_TICKS);
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|err| PluginError::Call(describe_failure(&err, limits)))?;
        Ok(Warm {
            store,
            bindings,
            calls: 0,
        })
    }

    fn take_warm(&self, scope: &str) -> Option<Warm> {
        self.warm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(scope)
            .and_then(Vec::pop)
    }

    fn put_warm(&self, scope: &str, warm: Warm) {
        let mut pools = self.warm.lock().unwrap_or_else(PoisonError::into_inner);
        let pool = pools.entry(scope.to_owned()).or_default();
        if pool.len() < MAX_IDLE_PER_SCOPE {
            pool.push(warm);
        }
    }
}

/// The component's import and export names, for `plugin check`.
fn describe(component: &Component, runtime: &PluginRuntime) -> (Vec<String>, Vec<String>) {
    let engine = runtime.linker().engine();
    let ty = component.component_type();
    let imports = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let exports = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    (imports, exports)
}

/// Runs `call` to completion on this thread's plugin executor, or gives up after `wall`
/// (`None`): dropping the future cancels the call wherever it is, in wasm or in a host call.
///
/// Each calling thread has its own single-threaded executor, so a call never moves between
/// threads and the CPU limit can read the thread's CPU clock; the epoch callback yields to the
/// executor every tick, which is when the wall-clock deadline is checked.
fn bounded<T>(wall: std::time::Duration, call: impl std::future::Future<Output = T>) -> Option<T> {
    thread_local! {
        static EXECUTOR: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread tokio runtime for plugin calls");
    }
    // The timeout is made inside `block_on`, so its timer is this executor's, whatever runtime
    // (if any) the calling thread belongs to.
    EXECUTOR.with(|executor| {
        executor
            .block_on(async { tokio::time::timeout(wall, call).await })
            .ok()
    })
}

/// Logs what the plugin wrote to stdout/stderr since the last call; returns the bytes used.
fn log_stdio(store: &mut Store<HostState>) -> usize {
    let state = store.data_mut();
    let plugin = state.plugin_ref.clone();
    let (out, err) = (state.stdout.contents(), state.stderr.contents());
    for (text, logged, stream) in [
        (&out, &mut state.logged.0, "stdout"),
        (&err, &mut state.logged.1, "stderr"),
    ] {
        if text.len() > *logged {
            let fresh = String::from_utf8_lossy(&text[*logged..]);
            for line in fresh.lines().filter(|line| !line.trim().is_empty()) {
                if let Some(line) = state.log_budget.admit(line) {
                    tracing::info!(plugin = &*plugin, stream, "{line}");
                }
            }
            *logged = text.len();
        }
    }
    out.len().max(err.len())
}

/// A one-line reason for a failed call.
fn describe_failure(err: &wasmtime::Error, limits: &Limits) -> String {
    if let Some(trap) = err.downcast_ref::<Trap>() {
        return match trap {
            Trap::Interrupt => format!(
                "exceeded its CPU time limit ({:?}) and was stopped",
                limits.time
            ),
            Trap::StackOverflow => "overflowed its call stack".to_owned(),
            Trap::UnreachableCodeReached => {
                "trapped: wasm `unreachable` executed (a panic in the plugin)".to_owned()
            }
            other => format!("trapped: {other}"),
        };
    }
    let text = format!("{err:#}");
    if text.contains("forcing trap when growing memory") {
        return format!(
            "exceeded its memory limit ({} MiB)",
            limits.memory_bytes >> 20
        );
    }
    format!("failed: {}", first_line(&text))
}

/// Why a `.wasm` file of `len` bytes is refused before it is compiled.
pub(crate) fn too_large(len: u64, cap: usize) -> String {
    format!(
        "is {len} bytes, over the {} MiB limit for a plugin file (plugins.max_wasm_mib)",
        cap >> 20
    )
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect()
}

/// Refuses output the host cannot send as promised. Everything a plugin returns counts toward
/// the output limit: body, content type, and every header name and value.
pub fn validate_outgoing(outgoing: &Outgoing, limits: &Limits) -> Result<(), PluginError> {
    let refuse = |message: String| Err(PluginError::Call(message));
    if outgoing.headers.len() > MAX_EXTRA_HEADERS {
        return refuse(format!(
            "returned {} extra headers; at most {MAX_EXTRA_HEADERS} are allowed",
            outgoing.headers.len()
        ));
    }
    let size = outgoing.body.len()
        + outgoing.content_type.len()
        + outgoing
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>();
    if size > limits.output_bytes {
        return refuse(format!(
            "returned {size} bytes (body, content type and headers), over the {} KiB output limit",
            limits.output_bytes >> 10
        ));
    }
    let content_type = outgoing.content_type.trim();
    if content_type.is_empty() || hyper::header::HeaderValue::from_str(content_type).is_err() {
        return refuse(format!(
            "returned an invalid content type `{}`",
            outgoing
                .content_type
                .escape_debug()
                .take(80)
                .collect::<String>()
        ));
    }
    if is_json(content_type)
        && serde_json::from_slice::<serde::de::IgnoredAny>(&outgoing.body).is_err()
    {
        return refuse(format!(
            "returned a body that is not valid JSON although its content type is `{content_type}`"
        ));
    }
    for (name, value) in &outgoing.headers {
        let shown: String = name.escape_debug().take(80).collect();
        if is_reserved_header(name) {
            return refuse(format!(
                "may not set the `{shown}` header: the host sets it (content type, framing, \
                 signatures) or it is hop-by-hop"
            ));
        }
        if value.len() > MAX_HEADER_VALUE {
            return refuse(format!(
                "returned a {} byte value for header `{shown}`; at most {MAX_HEADER_VALUE} bytes",
                value.len()
            ));
        }
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err()
            || hyper::header::HeaderValue::from_str(value).is_err()
        {
            return refuse(format!("returned an invalid header `{shown}`"));
        }
    }
    Ok(())
}

/// Whether a content type promises JSON (`application/json`, `…+json`, with parameters).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// A representative event for smoke tests.
fn sample_event() -> Event {
    let data = serde_json::json!({
        "payment_id": "00000000-0000-7000-8000-000000000000",
        "status": "confirmed",
        "address": "0x0000000000000000000000000000000000000000",
        "amount": "12.5",
        "amount_raw": "12500000",
        "chain": "ethereum",
        "chain_id": 1,
        "token_id": "usdc",
        "tx_hash": "0x00",
        "block_number": 1,
        "confirmations": 12
    });
    let body = serde_json::json!({
        "type": "payment.confirmed",
        "timestamp": "2026-01-01T00:00:00Z",
        "id": "evt_smoke",
        "data": data,
    });
    Event {
        id: "evt_smoke".to_owned(),
        event_type: "payment.confirmed".to_owned(),
        timestamp: 1_767_225_600,
        now: 1_767_225_600,
        data: data.to_string(),
        body: body.to_string().into_bytes(),
        content_type: "application/json".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(body: &[u8], content_type: &str, headers: &[(&str, &str)]) -> Outgoing {
        Outgoing {
            body: body.to_vec(),
            content_type: content_type.to_owned(),
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        }
    }

    #[test]
    fn json_content_types_are_recognised_with_parameters_and_suffixes() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/vnd.acme+json"));
        assert!(!is_json("text/plain"));
    }

    #[test]
    fn output_over_the_limit_is_refused() {
        let limits = Limits {
            output_bytes: 4,
            ..Limits::default()
        };
        let err = validate_outgoing(&outgoing(b"12345", "text/plain", &[]), &limits).unwrap_err();
        assert!(err.to_string().contains("output limit"), "{err}");
    }

    #[test]
    fn invalid_json_under_a_json_content_type_is_refused() {
        let err = validate_outgoing(
            &outgoing(&[0xff, 0xfe], "application/json", &[]),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        validate_outgoing(
            &outgoing(&[0xff], "application/octet-stream", &[]),
            &Limits::default(),
        )
        .unwrap();
    }

    #[test]
    fn headers_count_toward_the_output_limit_and_are_bounded_in_number_and_size() {
        let limits = Limits {
            output_bytes: 64,
            ..Limits::default()
        };
        let big = "v".repeat(40);
        let err = validate_outgoing(
            &outgoing(b"{}", "application/json", &[("x-a", &big), ("x-b", &big)]),
            &limits,
        )
        .unwrap_err();
        assert!(err.to_string().contains("output limit"), "{err}");
        let many: Vec<(String, String)> = (0..33)
            .map(|i| (format!("x-h{i}"), "1".to_owned()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let err = validate_outgoing(
            &outgoing(b"{}", "application/json", &many),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("at most 32"), "{err}");
        let long = "v".repeat(MAX_HEADER_VALUE + 1);
        let err = validate_outgoing(
            &outgoing(b"{}", "application/json", &[("x-long", &long)]),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("at most 8192 bytes"), "{err}");
    }

    #[test]
    fn plugins_cannot_set_signature_framing_or_hop_by_hop_headers() {
        for name in [
            "webhook-signature",
            "Webhook-Id",
            "X-Webhook-Signature",
            "x-webhook-anything",
            "content-length",
            "Content-Encoding",
            "Host",
            "Connection",
            "Keep-Alive",
            "TE",
            "Trailer",
            "Upgrade",
            "Proxy-Authorization",
            "Expect",
            "Transfer-Encoding",
        ] {
            let err = validate_outgoing(
                &outgoing(b"{}", "application/json", &[(name, "x")]),
                &Limits::default(),
            )
            .unwrap_err();
            assert!(err.to_string().contains("may not set"), "{name}: {err}");
        }
        validate_outgoing(
            &outgoing(b"{}", "application/json", &[("x-acme-shop", "42")]),
            &Limits::default(),
        )
        .unwrap();
    }
}
