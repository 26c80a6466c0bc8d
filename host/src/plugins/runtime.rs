//! The wasmtime engine every plugin runs in, and the limits of one call.
//!
//! * **Compile once, instantiate cheaply**: the pooling allocator keeps instance slots and
//!   copy-on-write memory images ready, so a fresh instance costs microseconds.
//! * **CPU**: epoch interruption, checked against the thread's CPU clock. A ticker thread bumps
//!   the engine's epoch every millisecond; at every tick a callback reads the calling thread's
//!   CPU time: a call that really used its `time_limit` traps, one that was merely descheduled
//!   on a busy machine goes on. Wall-clock deadlines alone fail healthy plugins under load; fuel would make every
//!   wasm instruction pay for the check.
//! * **Wall clock**: calls are async (wasmtime's async support) and run under a timeout on the
//!   calling thread's own executor; the epoch callback yields every tick, and a WASI host call
//!   (a sleep, a poll) is an await point, so a call that blocks without using CPU is cancelled
//!   at `wall_time_limit` all the same, and its instance discarded.
//! * **Memory**: a `StoreLimits` cap per instance that traps on growth past it.
//! * **Capabilities**: the world's only import is logging. Components built for WASI p2 get
//!   wasmtime-wasi with an empty context: no preopened directories, no environment, no
//!   arguments, no network; stdout and stderr go to the log through a bounded pipe.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, Store,
    StoreLimits, StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::plugins::cache::{CacheKey, ComponentCache};
use crate::plugins::plugin::PluginError;

wasmtime::component::bindgen!({
    world: "webhook-plugin",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
});

/// How often the epoch advances: the granularity of the CPU limit.
const TICK: Duration = Duration::from_millis(1);

/// The epoch deadline at the start of a call: the next tick. From then on the callback checks
/// the CPU clock, and yields for the wall-clock check, every tick.
pub(crate) const CALL_DEADLINE_TICKS: u64 = 1;

/// Bytes a plugin may write to stdout or stderr over one instance's life.
pub const STDIO_CAPACITY: usize = 64 * 1024;

/// Bytes of log text one call may write (host `log` calls and stdout/stderr together).
pub const LOG_BUDGET: usize = 64 * 1024;

/// What one call may still log, and what it tried to log past that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogBudget {
    left: usize,
    pub(crate) dropped_lines: usize,
    pub(crate) dropped_bytes: usize,
}

impl LogBudget {
    pub(crate) fn fresh() -> Self {
        Self {
            left: LOG_BUDGET,
            dropped_lines: 0,
            dropped_bytes: 0,
        }
    }

    /// The line as it may be logged (control characters escaped, so it cannot forge another
    /// log line or drive a terminal), or `None` once the call's budget is spent.
    pub(crate) fn admit(&mut self, line: &str) -> Option<String> {
        // Escaping only lengthens a line: one already too long is dropped without the work.
        let escaped = (line.len() <= self.left).then(|| escape_controls(line));
        let Some(escaped) = escaped.filter(|escaped| escaped.len() <= self.left) else {
            self.left = 0;
            self.dropped_lines += 1;
            self.dropped_bytes += line.len();
            return None;
        };
        self.left -= escaped.len();
        Some(escaped)
    }
}

/// `text` with every control character (CR, LF, ESC, …) written as an escape like `\n`.
pub(crate) fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Instance slots in the pooling allocator (warm and in-flight instances together).
const INSTANCE_SLOTS: u32 = 1000;

/// What one call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU time, on the calling thread's clock.
    pub time: Duration,
    /// Wall-clock time, whatever the plugin does (a call blocked in a host call uses no CPU).
    pub wall: Duration,
    pub memory_bytes: usize,
    pub output_bytes: usize,
    /// Largest `.wasm` file compiled.
    pub wasm_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            time: Duration::from_millis(10),
            wall: Duration::from_millis(50),
            memory_bytes: 16 << 20,
            output_bytes: 256 << 10,
            wasm_bytes: 32 << 20,
        }
    }
}

impl Limits {
    /// Builds the limits from the `[plugins]` configuration.
    pub fn from_config(config: &crate::config::PluginsConfig) -> Self {
        Self {
            time: config.time_limit,
            wall: config.wall_time_limit,
            memory_bytes: config.memory_limit_mib << 20,
            output_bytes: config.output_limit_kib << 10,
            wasm_bytes: config.max_wasm_mib << 20,
        }
    }
}

/// The per-instance state a plugin's host calls see.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    /// `name@version`, for log lines.
    pub(crate) plugin_ref: Arc<str>,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
    /// How much of stdout/stderr has been logged already.
    pub(crate) logged: (usize, usize),
    /// The calling thread's CPU time when the current call began.
    pub(crate) call_cpu_start: Duration,
    /// What the current call may still log.
    pub(crate) log_budget: LogBudget,
    cpu_limit: Duration,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl self::hookgate::plugin::types::Host for HostState {}

impl self::hookgate::plugin::log::Host for HostState {
    async fn log(&mut self, level: self::hookgate::plugin::log::Level, message: String) {
        use self::hookgate::plugin::log::Level;
        let Some(message) = self.log_budget.admit(&message) else {
            return;
        };
        let plugin = &*self.plugin_ref;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

/// The engine, the linker with the host's imports, and the limits.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    cache: Option<ComponentCache>,
    /// Dropping the runtime drops this, which stops the epoch ticker.
    _ticker: Arc<()>,
}

impl PluginRuntime {
    /// Builds the engine and starts its epoch ticker. `cache` (a directory and the key that
    /// authenticates its files) enables the compile cache.
    pub fn new(
        limits: Limits,
        cache: Option<(PathBuf, CacheKey)>,
    ) -> Result<Arc<Self>, PluginError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(INSTANCE_SLOTS)
            .total_core_instances(INSTANCE_SLOTS * 4)
            .total_memories(INSTANCE_SLOTS * 2)
            .total_tables(INSTANCE_SLOTS * 2)
            .max_memory_size(limits.memory_bytes);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(PluginError::engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(PluginError::engine)?;
        WebhookPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(PluginError::engine)?;
        let ticker = Arc::new(());
        spawn_ticker(engine.clone(), Arc::downgrade(&ticker)).map_err(|err| {
            PluginError::Engine(format!("cannot start the epoch ticker thread: {err}"))
        })?;
        let cache = cache.map(|(dir, key)| ComponentCache::new(dir, &engine, key));
        Ok(Arc::new(Self {
            engine,
            linker,
            limits,
            cache,
            _ticker: ticker,
        }))
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    /// Compiles `bytes`, or loads the cached compilation. Returns whether the cache served it.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Component, bool), PluginError> {
        if let Some(cache) = &self.cache
            && let Some(component) = cache.load(&self.engine, bytes)
        {
            return Ok((component, true));
        }
        let component =
            Component::from_binary(&self.engine, bytes).map_err(PluginError::invalid)?;
        if let Some(cache) = &self.cache {
            cache.store(bytes, &component);
        }
        Ok((component, false))
    }

    /// A store for one instance, with the memory cap and an empty WASI context.
    pub(crate) fn new_store(&self, plugin_ref: Arc<str>) -> Store<HostState> {
        let stdout = MemoryOutputPipe::new(STDIO_CAPACITY);
        let stderr = MemoryOutputPipe::new(STDIO_CAPACITY);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            HostState {
                wasi,
                table: ResourceTable::new(),
                limits,
                plugin_ref,
                stdout,
                stderr,
                logged: (0, 0),
                call_cpu_start: thread_cpu_time(),
                log_budget: LogBudget::fresh(),
                cpu_limit: self.limits.time,
            },
        );
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|store| {
            let state = store.data();
            let used = thread_cpu_time().saturating_sub(state.call_cpu_start);
            if used >= state.cpu_limit {
                return Ok(UpdateDeadline::Interrupt);
            }
            // Back to the executor every tick: that is where the wall-clock deadline is
            // checked (see `plugin::bounded`), and the CPU clock is read again next tick.
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }
}

/// CPU time the calling thread has used so far.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through the valid pointer it is given;
    // CLOCK_THREAD_CPUTIME_ID is supported on every Linux the gateway runs on.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if status != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Advances the engine's epoch every [`TICK`] until the runtime is dropped.
fn spawn_ticker(engine: Engine, alive: Weak<()>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("hookgate-plugin-epoch".to_owned())
        .spawn(move || {
            while alive.strong_count() > 0 {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_so_a_message_stays_one_line() {
        let forged = "ok\n2026-11-23T00:00:00Z  INFO hookgate: admin token is X\r\u{1b}[2J";
        let escaped = escape_controls(forged);
        assert!(!escaped.chars().any(char::is_control), "{escaped}");
        assert!(escaped.contains("ok\\n2026"), "{escaped}");
        assert!(escaped.contains("\\u{1b}[2J"), "{escaped}");
        assert_eq!(escape_controls("plain – ünïcode"), "plain – ünïcode");
    }

    #[test]
    fn a_call_logs_at_most_its_budget_and_counts_the_rest() {
        let mut budget = LogBudget::fresh();
        let line = "x".repeat(1000);
        let admitted = (0..100).filter(|_| budget.admit(&line).is_some()).count();
        assert_eq!(admitted, LOG_BUDGET / 1000);
        assert_eq!(budget.dropped_lines, 100 - admitted);
        assert_eq!(budget.dropped_bytes, (100 - admitted) * 1000);
    }
}
