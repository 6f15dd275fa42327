//! WebAssembly (WASI preview 1 commands) run inside the service by wasmtime.
//!
//! What this module narrows wasmtime to:
//! - two [`wasmtime::Engine`]s per runtime, one per compiler, each with the
//!   pooling allocator (so a fresh instance per execute costs microseconds)
//!   and epoch interruption driven by a background ticker thread (so a guest
//!   loop cannot outlive its timeout);
//! - a module is validated, compiled and pre-linked ([`InstancePre`]) once
//!   per script hash and kept in a bounded in-memory cache;
//! - tiered compilation: a new module is compiled by Winch, wasmtime's
//!   baseline compiler, so initialize answers quickly (a module of 300
//!   functions: 14 to 23 ms against Cranelift's 150 to 170; a tiny one,
//!   where fixed costs dominate, 2 against 3 to 3.7 ms). Once the module
//!   has run on Winch's code for as long as Winch took to compile it, a
//!   background thread at low priority compiles it again with Cranelift
//!   and swaps the faster code into the cache. Modules Winch cannot
//!   compile (tail calls, relaxed SIMD), and every module on hosts other
//!   than x86-64, where Winch is not production-ready, go to Cranelift
//!   directly;
//! - every execute gets a fresh [`Store`] and instance: nothing a guest
//!   writes survives into the next execute (pool slots are zeroed on
//!   teardown, the first MiB by memset, the rest by madvise);
//! - a guest runs its first slice (up to one epoch tick) on the calling
//!   task and yields at every tick after that; a guest still running then
//!   continues on a blocking-pool thread, so a CPU-bound one never holds a
//!   reactor worker for longer than a tick;
//! - the guest sees WASI preview 1 only: stdin is the event JSON, stdout
//!   (bounded by `max_result_bytes`) is the result, stderr (bounded by
//!   `max_log_bytes`) is its logs; no preopened directories, no environment,
//!   no arguments beyond a program name, no sockets.
//!
//! Precompiled machine code is deliberately *not* handed to core as an
//! artifact: `Module::deserialize` trusts its input completely, and bytes
//! read back from a shared database cannot be proven to be ours. Compiling
//! a module from source costs milliseconds, so every replica compiles for
//! itself and caches the result in memory.

mod pipe;
mod source;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::{
    Config, Enabled, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Strategy, Trap, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::{
    Language, LanguageRuntime, LimitKind, Limits, Output, Prepared, RuntimeError, RuntimeStatus,
    Script, SourceLocation,
};

use self::pipe::{BoundedPipe, OnOverflow};

/// How often the epoch advances: the granularity of wasm timeouts.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A guest blocked in a host call (`poll_oneoff` sleeping) is not reached
/// by epochs; the call's future is dropped (which cancels it) this long
/// after the timeout, leaving the epoch trap the first say on CPU loops.
const HOST_WAIT_MARGIN: Duration = Duration::from_millis(50);

/// The longest a module's `start` function may run when the module is
/// primed at initialize (see `WasmEngine::prime`).
const PRIME_TIMEOUT: Duration = Duration::from_millis(100);

/// Bytes of each linear memory (and table) reset by memset rather than
/// madvise when an instance is torn down; at most this much stays resident
/// per idle pool slot.
const LINEAR_MEMORY_KEEP_RESIDENT: usize = 1024 * 1024;
const TABLE_KEEP_RESIDENT: usize = 64 * 1024;
/// Decommits (of memory beyond the resident part) flushed together.
const DECOMMIT_BATCH_SIZE: usize = 1;

/// Unused pool slots that keep an earlier module's memory image ("warm"
/// slots, up to [`LINEAR_MEMORY_KEEP_RESIDENT`] resident each), per engine.
/// Cranelift's: wasmtime's default. Winch's code lives for milliseconds, so
/// its pool keeps few: otherwise every new module would leave a second
/// slot resident (service RSS +8 MiB after 64 new modules).
const OPTIMIZED_WARM_SLOTS: u32 = 100;
const BASELINE_WARM_SLOTS: u32 = 4;

/// Baseline modules waiting for their Cranelift compile. A module that finds
/// the queue full asks again at its next execute.
const TIER_UP_QUEUE: usize = 64;

/// The tier-up thread's nice value: its compiles use what CPU the executes
/// leave, instead of taking a core from them under load.
const TIER_UP_NICE: libc::c_int = 10;

/// Sizing of the wasm runtime.
#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// Instances that may run at once: the pooling allocator reserves this
    /// many slots up front (virtual memory only until used).
    pub max_instances: u32,
    /// The largest linear memory one instance may reach; a session's
    /// `Limits::memory_bytes` is capped by it.
    pub max_memory_bytes: u64,
    /// Compiled modules kept in memory (least recently used evicted).
    pub module_cache_entries: usize,
    /// How long an execute waits for a free instance slot before answering
    /// [`RuntimeError::Busy`].
    pub queue_wait: Duration,
}

impl Default for WasmConfig {
    /// Sized for a small host (2 cores, ~24 GiB): 64 concurrent instances
    /// of up to 1 GiB each would already oversubscribe the CPUs many times.
    fn default() -> Self {
        WasmConfig {
            max_instances: 64,
            max_memory_bytes: 1024 * 1024 * 1024,
            module_cache_entries: 256,
            queue_wait: Duration::from_secs(10),
        }
    }
}

/// The wasm runtime for [`crate::Runtimes`].
pub fn runtime(config: WasmConfig) -> Arc<dyn LanguageRuntime> {
    WasmRuntime::new(config)
}

/// The WebAssembly runtime. Also used by the Rust runtime for scripts
/// compiled to `wasm32-wasip1`, which is why it is public as a type.
pub struct WasmRuntime {
    /// `Err` holds why wasmtime could not start here (e.g. the pooling
    /// allocator could not reserve its address space); `status` reports it.
    engine: Result<Arc<WasmEngine>, String>,
}

impl WasmRuntime {
    pub fn new(config: WasmConfig) -> Arc<WasmRuntime> {
        let engine = WasmEngine::start(config).map(Arc::new).map_err(|error| {
            tracing::error!(%error, "the WebAssembly runtime could not start");
            error
        });
        Arc::new(WasmRuntime { engine })
    }

    fn engine(&self) -> Result<&Arc<WasmEngine>, RuntimeError> {
        self.engine
            .as_ref()
            .map_err(|reason| RuntimeError::Unavailable {
                language: Language::Wasm,
                reason: reason.clone(),
            })
    }

    /// Validates, compiles and pre-links `bytes` (a wasm binary) under
    /// `key`, or returns the module already cached under `key`.
    pub(crate) async fn load_binary(
        &self,
        key: &str,
        bytes: Arc<Vec<u8>>,
    ) -> Result<Arc<LoadedModule>, RuntimeError> {
        self.engine()?.load(key, ModuleSource::Binary(bytes)).await
    }

    /// Runs a module loaded by [`Self::load_binary`] once.
    pub(crate) async fn run(
        &self,
        module: Arc<LoadedModule>,
        event_json: &str,
        limits: &Limits,
    ) -> Result<Output, RuntimeError> {
        self.engine()?.run(module, event_json, limits).await
    }

    pub(crate) fn cached(&self, key: &str) -> Option<Arc<LoadedModule>> {
        self.engine.as_ref().ok()?.cached(key)
    }
}

#[async_trait::async_trait]
impl LanguageRuntime for WasmRuntime {
    fn language(&self) -> Language {
        Language::Wasm
    }

    fn status(&self) -> RuntimeStatus {
        match &self.engine {
            Ok(engine) if engine.slots.is_closed() => RuntimeStatus::Unavailable {
                reason: "the wasm runtime is shutting down".to_string(),
            },
            Ok(_) => RuntimeStatus::Ready,
            Err(reason) => RuntimeStatus::Unavailable {
                reason: reason.clone(),
            },
        }
    }

    async fn prepare(&self, script: &Script) -> Result<Prepared, RuntimeError> {
        let engine = self.engine()?;
        engine
            .load(&script.hash, ModuleSource::Text(script.source.clone()))
            .await?;
        Ok(Prepared::default())
    }

    async fn execute(
        &self,
        script: &Script,
        event_json: &str,
        limits: &Limits,
    ) -> Result<Output, RuntimeError> {
        let engine = self.engine()?;
        // After a restart or an eviction the module is simply compiled
        // again from the script, which core always passes along.
        let module = match engine.cached(&script.hash) {
            Some(module) => module,
            None => {
                engine
                    .load(&script.hash, ModuleSource::Text(script.source.clone()))
                    .await?
            }
        };
        engine.run(module, event_json, limits).await
    }

    async fn release(&self, _worker_key: &str) {
        // Instances never outlive an execute; compiled modules are shared by
        // hash across sessions and leave the cache by LRU.
    }

    async fn shutdown(&self) {
        if let Ok(engine) = &self.engine {
            engine.slots.close();
            engine.ticker_stop.store(true, Ordering::Relaxed);
        }
    }
}

/// A compiled, pre-linked module: instantiating it needs no further lookups.
pub(crate) struct LoadedModule {
    pre: InstancePre<CallState>,
    /// `Some` while the code is Winch's: what the tier-up needs.
    baseline: Option<Baseline>,
}

/// What a module compiled by Winch keeps for its Cranelift compile.
struct Baseline {
    /// The module's cache key, under which the faster code replaces it.
    key: String,
    /// The module's binary.
    bytes: Arc<Vec<u8>>,
    /// How long Winch took to compile and link it: the tier-up is queued
    /// once the module has run for that long (see [`Baseline::ran`]).
    compile_nanos: u64,
    /// Time its executes have taken on Winch's code (instance, guest and
    /// teardown).
    run_nanos: AtomicU64,
    /// Set once the tier-up is queued, so each module is queued once.
    tier_up_queued: AtomicBool,
}

/// A span in nanoseconds, as [`Baseline`] keeps them; 584 years and more
/// (never reached) count as the most a `u64` holds.
fn saturating_nanos(span: Duration) -> u64 {
    u64::try_from(span.as_nanos()).unwrap_or(u64::MAX)
}

impl Baseline {
    /// Counts one execute's time on Winch's code; true once the module has
    /// run for as long as its compile took. Cranelift's compile costs
    /// several times Winch's, on a core the executes share: it is worth it
    /// for a module that keeps running, not for one run a few times. Queued
    /// at load instead, it ran beside the initialize that loaded the module,
    /// which then answered later (a new module every 250 ms, initialize p50
    /// in three interleaved pairs of harness runs: 3.27 to 4.15 ms against
    /// 3.19 to 3.29 without it).
    fn ran(&self, elapsed: Duration) -> bool {
        let elapsed = saturating_nanos(elapsed);
        let total = self
            .run_nanos
            .fetch_add(elapsed, Ordering::Relaxed)
            .saturating_add(elapsed);
        total >= self.compile_nanos
    }
}

impl LoadedModule {
    fn engine(&self) -> &Engine {
        self.pre.module().engine()
    }
}

enum ModuleSource {
    /// `script_content`: WAT or base64.
    Text(Arc<str>),
    /// A wasm binary (e.g. from rustc).
    Binary(Arc<Vec<u8>>),
}

/// Where a guest run failed: instantiation failures that are neither traps
/// nor the memory limit are the platform's fault, not the script's.
enum CallError {
    Instantiate(wasmtime::Error),
    Run(wasmtime::Error),
}

/// Per-execute store data.
struct CallState {
    wasi: WasiP1Ctx,
    limiter: GuestLimiter,
}

/// Enforces the memory limit and remembers that it did, so a denied
/// `memory.grow` is reported as 507 rather than as whatever the guest did
/// next with the failure.
#[derive(Clone, Copy)]
struct GuestLimiter {
    memory_bytes: usize,
    /// The size the guest asked for when it was refused.
    denied_memory: Option<usize>,
}

/// Plenty for any real module (rustc emits a few hundred entries); stops a
/// guest from using `table.grow` as a way around the memory limit.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.denied_memory = Some(desired);
            // Trapping (instead of letting memory.grow return -1) makes the
            // limit unmistakable: allocators abort on failure anyway, and a
            // guest that ignores -1 would otherwise spin until the timeout.
            wasmtime::bail!(
                "linear memory would grow to {desired} bytes, over the limit of {} bytes",
                self.memory_bytes
            );
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // The pool slot itself is full: the same limit, seen from below.
        self.denied_memory.get_or_insert(self.memory_bytes);
        Err(error)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

struct ModuleCache {
    entries: HashMap<String, (Arc<LoadedModule>, u64)>,
    capacity: usize,
    clock: u64,
}

impl ModuleCache {
    fn get(&mut self, key: &str) -> Option<Arc<LoadedModule>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(module, last_used)| {
            *last_used = clock;
            module.clone()
        })
    }

    /// Puts `new` in place of `old`, unless `old` has left the cache (or
    /// been replaced) meanwhile. Keeps its place in the LRU order.
    fn replace(&mut self, key: &str, old: &Arc<LoadedModule>, new: Arc<LoadedModule>) -> bool {
        match self.entries.get_mut(key) {
            Some((module, _)) if Arc::ptr_eq(module, old) => {
                *module = new;
                true
            }
            _ => false,
        }
    }

    fn insert(&mut self, key: &str, module: Arc<LoadedModule>) {
        self.clock += 1;
        self.entries.insert(key.to_string(), (module, self.clock));
        while self.entries.len() > self.capacity.max(1) {
            // A linear scan is fine at a few hundred entries, and only runs
            // when a new module is compiled (milliseconds anyway).
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, last_used))| *last_used)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
    }
}

/// One wasmtime engine with its WASI linker: a module compiled by one
/// engine only runs in that engine's stores.
struct Compiler {
    engine: Engine,
    linker: Linker<CallState>,
}

impl Compiler {
    fn start(config: &WasmConfig, strategy: Strategy, warm_slots: u32) -> Result<Compiler, String> {
        let max_memory = usize::try_from(config.max_memory_bytes).map_err(|_| {
            format!(
                "wasm max_memory_bytes {} does not fit this platform",
                config.max_memory_bytes
            )
        })?;
        // Each engine has a pool of `max_instances` slots (address space,
        // not memory, until used); the runtime's semaphore keeps the two
        // together at `max_instances` instances.
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(config.max_instances)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances)
            .total_stacks(config.max_instances)
            .total_component_instances(0)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(max_memory)
            .table_elements(MAX_TABLE_ELEMENTS)
            // Every execute drops its store. By default the slot is reset
            // with an madvise per memory and table, flushed on each drop:
            // ~11% of service CPU in the benchmark, plus page faults when
            // the slot is reused. Resetting the first pages with memset
            // instead keeps them resident and needs no madvise for small
            // guests (most scripts); the next instance still finds the
            // module's initial contents.
            .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            // Without it that memset covers the whole resident part (all of
            // a small guest's memory) on every drop, written or not. With
            // it one `PAGEMAP_SCAN` ioctl finds the pages the guest wrote
            // and only those are reset (Linux 6.7 and later; `Auto` falls
            // back to the memset elsewhere).
            .pagemap_scan(Enabled::Auto)
            .max_unused_warm_slots(warm_slots)
            // What is left to madvise (large guests) goes in batches. Small,
            // because a queued slot keeps its dirty pages resident until
            // the flush: per shard (one per core) at most batch - 1 slots,
            // each up to a session's memory limit.
            .decommit_batch_size(DECOMMIT_BATCH_SIZE);
        let mut wasm_config = Config::new();
        wasm_config
            .strategy(strategy)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm_config)
            .map_err(|error| format!("wasmtime could not start: {error:#}"))?;

        let mut linker: Linker<CallState> = Linker::new(&engine);
        // The async bindings: a guest waiting in a host call is then a
        // future that the timeout can drop.
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |state: &mut CallState| {
            &mut state.wasi
        })
        .map_err(|error| format!("could not link WASI preview 1: {error:#}"))?;
        Ok(Compiler { engine, linker })
    }

    /// Validates and compiles `bytes`. `Err` is what the module did wrong.
    fn compile(&self, bytes: &[u8]) -> Result<Module, RuntimeError> {
        Module::from_binary(&self.engine, bytes)
            .map_err(|error| initialization(format!("invalid wasm module: {error:#}")))
    }

    /// Checks that `module` is a WASI command and links it.
    fn link(&self, module: &Module) -> Result<InstancePre<CallState>, RuntimeError> {
        match module.get_export("_start") {
            Some(ExternType::Func(start))
                if start.params().len() == 0 && start.results().len() == 0 => {}
            _ => {
                return Err(initialization(
                    "the module exports no `_start` function taking and returning nothing: \
                     a WASI command module is expected"
                        .to_string(),
                ))
            }
        }
        self.linker.instantiate_pre(module).map_err(|error| {
            initialization(format!(
                "the module imports something other than WASI preview 1 \
                 (wasi_snapshot_preview1): {error:#}"
            ))
        })
    }
}

/// A module to compile with Cranelift, and what finishing the job needs.
struct TierUpJob {
    engine: Arc<WasmEngine>,
    module: Arc<LoadedModule>,
    runtime: tokio::runtime::Handle,
}

/// Winch and the queue of the thread that moves its modules to Cranelift:
/// one needs the other.
struct Tiering {
    baseline: Compiler,
    tier_up: SyncSender<TierUpJob>,
}

struct WasmEngine {
    /// Cranelift: the code every module ends up with.
    optimizing: Compiler,
    /// On x86-64, where Winch and the tier-up thread could start: the code
    /// a new module starts with. `None`: modules go to Cranelift directly.
    tiering: Option<Tiering>,
    modules: Mutex<ModuleCache>,
    /// One permit per pool slot, so executes queue instead of failing when
    /// the pool is full.
    slots: Arc<Semaphore>,
    config: WasmConfig,
    ticker_stop: Arc<AtomicBool>,
}

impl WasmEngine {
    fn start(config: WasmConfig) -> Result<WasmEngine, String> {
        let optimizing = Compiler::start(&config, Strategy::Cranelift, OPTIMIZED_WARM_SLOTS)?;
        let tiering = if cfg!(target_arch = "x86_64") {
            Compiler::start(&config, Strategy::Winch, BASELINE_WARM_SLOTS)
                .and_then(|baseline| {
                    Ok(Tiering {
                        baseline,
                        tier_up: spawn_tier_up_thread()?,
                    })
                })
                .map_err(|error| {
                    tracing::warn!(%error, "no wasm tiering: new modules wait for Cranelift");
                })
                .ok()
        } else {
            None
        };

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let engines = std::iter::once(&optimizing.engine)
            .chain(tiering.as_ref().map(|tiering| &tiering.baseline.engine))
            .collect::<Vec<_>>();
        spawn_epoch_ticker(&engines, ticker_stop.clone())?;

        Ok(WasmEngine {
            slots: Arc::new(Semaphore::new(config.max_instances as usize)),
            modules: Mutex::new(ModuleCache {
                entries: HashMap::new(),
                capacity: config.module_cache_entries,
                clock: 0,
            }),
            optimizing,
            tiering,
            config,
            ticker_stop,
        })
    }

    fn modules(&self) -> MutexGuard<'_, ModuleCache> {
        // The cache holds only finished entries; a panic elsewhere while the
        // lock was held leaves it consistent.
        self.modules
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn cached(&self, key: &str) -> Option<Arc<LoadedModule>> {
        self.modules().get(key)
    }

    async fn load(
        self: &Arc<Self>,
        key: &str,
        source: ModuleSource,
    ) -> Result<Arc<LoadedModule>, RuntimeError> {
        if let Some(module) = self.cached(key) {
            return Ok(module);
        }
        let engine = self.clone();
        let owned_key = key.to_string();
        // Compiling takes milliseconds to seconds: not on the reactor.
        let module = tokio::task::spawn_blocking(move || engine.compile(owned_key, source))
            .await
            .map_err(|error| {
                RuntimeError::Internal(format!("wasm compile task failed: {error}"))
            })??;
        let module = Arc::new(module);
        self.prime(&module).await;
        self.modules().insert(key, module.clone());
        Ok(module)
    }

    /// Queues a baseline module's Cranelift compile, once. With the queue
    /// full it is left for a later execute to ask again.
    fn request_tier_up(self: &Arc<Self>, module: &Arc<LoadedModule>) {
        let (Some(baseline), Some(tiering)) = (&module.baseline, &self.tiering) else {
            return;
        };
        if baseline.tier_up_queued.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            baseline.tier_up_queued.store(false, Ordering::Relaxed);
            return;
        };
        let job = TierUpJob {
            engine: self.clone(),
            module: module.clone(),
            runtime,
        };
        match tiering.tier_up.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => baseline.tier_up_queued.store(false, Ordering::Relaxed),
            // The thread is gone (it only ends with the engine): the module
            // keeps Winch's code, which is correct, only slower.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Compiles a baseline module with Cranelift (on the tier-up thread),
    /// then has the runtime prime the result and put it in the module's
    /// place in the cache.
    fn tier_up(self: Arc<Self>, module: Arc<LoadedModule>, runtime: &tokio::runtime::Handle) {
        let Some(baseline) = &module.baseline else {
            return;
        };
        if self.slots.is_closed() {
            return;
        }
        let pre = match self
            .optimizing
            .compile(&baseline.bytes)
            .and_then(|compiled| self.optimizing.link(&compiled))
        {
            Ok(pre) => pre,
            Err(error) => {
                // Winch took it, so this is not the script's fault; the
                // module keeps running on Winch's code.
                tracing::warn!(key = %baseline.key, %error, "Cranelift could not compile a module Winch compiled");
                return;
            }
        };
        let optimized = Arc::new(LoadedModule {
            pre,
            baseline: None,
        });
        let key = baseline.key.clone();
        // A runtime that has shut down drops this task unrun.
        runtime.spawn(async move {
            self.prime(&optimized).await;
            if self.modules().replace(&key, &module, optimized) {
                metrics::counter!("lambda_runtime_wasm_tier_ups_total").increment(1);
            }
        });
    }

    /// Instantiates a newly compiled module once and drops the instance,
    /// without calling `_start`. The pool slot then holds this module's
    /// memory image, and later instances of it prefer that slot: the first
    /// execute no longer maps and faults in a fresh image (it took twice
    /// as long as the second without this). A module with a `start`
    /// function runs it here under the default limits, as Node.js and
    /// Python run a script's top level at initialize, but for
    /// [`PRIME_TIMEOUT`] at most; failures are left for the execute to
    /// report.
    async fn prime(&self, module: &LoadedModule) {
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            return;
        };
        let mut store = self.new_store(
            module,
            WasiCtxBuilder::new().build_p1(),
            &Limits::default(),
            Instant::now() + PRIME_TIMEOUT,
        );
        let instantiate = module.pre.instantiate_async(&mut store);
        if let Ok(Err(error)) =
            tokio::time::timeout(PRIME_TIMEOUT + HOST_WAIT_MARGIN, instantiate).await
        {
            tracing::debug!(error = %format!("{error:#}"), "priming a wasm module failed");
        }
    }

    /// A store for one instance: WASI context, memory limit, and an epoch
    /// callback that yields every tick (so `run` can move a long guest off
    /// the reactor) until `deadline`, then traps with `Trap::Interrupt`, at
    /// most one tick late.
    fn new_store(
        &self,
        module: &LoadedModule,
        wasi: WasiP1Ctx,
        limits: &Limits,
        deadline: Instant,
    ) -> Store<CallState> {
        let memory_bytes = usize::try_from(limits.memory_bytes.min(self.config.max_memory_bytes))
            .unwrap_or(usize::MAX);
        let mut store = Store::new(
            module.engine(),
            CallState {
                wasi,
                limiter: GuestLimiter {
                    memory_bytes,
                    denied_memory: None,
                },
            },
        );
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store
    }

    /// Compiles with Winch when it can, else with Cranelift.
    fn compile(&self, key: String, source: ModuleSource) -> Result<LoadedModule, RuntimeError> {
        let started = Instant::now();
        let bytes = match source {
            ModuleSource::Text(text) => Arc::new(source::decode(&text)?),
            ModuleSource::Binary(bytes) => bytes,
        };
        if let Some(compiler) = self.tiering.as_ref().map(|tiering| &tiering.baseline) {
            match compiler.compile(&bytes) {
                Ok(module) => {
                    let pre = compiler.link(&module)?;
                    return Ok(LoadedModule {
                        pre,
                        baseline: Some(Baseline {
                            key,
                            bytes,
                            compile_nanos: saturating_nanos(started.elapsed()),
                            run_nanos: AtomicU64::new(0),
                            tier_up_queued: AtomicBool::new(false),
                        }),
                    });
                }
                // Either the module is invalid, and Cranelift says so too,
                // or it uses what Winch lacks (tail calls, relaxed SIMD).
                Err(error) => {
                    tracing::debug!(%error, "Winch declined a module; Cranelift compiles it")
                }
            }
        }
        let module = self.optimizing.compile(&bytes)?;
        Ok(LoadedModule {
            pre: self.optimizing.link(&module)?,
            baseline: None,
        })
    }

    async fn run(
        self: &Arc<Self>,
        module: Arc<LoadedModule>,
        event_json: &str,
        limits: &Limits,
    ) -> Result<Output, RuntimeError> {
        let waiting_since = Instant::now();
        let permit =
            match tokio::time::timeout(self.config.queue_wait, self.slots.clone().acquire_owned())
                .await
            {
                Ok(Ok(permit)) => permit,
                Ok(Err(_closed)) => {
                    return Err(RuntimeError::Unavailable {
                        language: Language::Wasm,
                        reason: "the wasm runtime is shutting down".to_string(),
                    })
                }
                Err(_elapsed) => {
                    return Err(RuntimeError::Busy {
                        language: Language::Wasm,
                        waited_ms: millis(waiting_since.elapsed()),
                    })
                }
            };
        // Winch's code counts how long it runs, for its tier-up.
        let on_baseline = module.baseline.is_some().then(|| Arc::clone(&module));
        let started = Instant::now();
        let engine = self.clone();
        let input = event_json.to_string();
        let call_limits = limits.clone();
        let mut call = Box::pin(async move {
            let _slot = permit;
            engine.run_guest(&module, input, &call_limits).await
        });
        // The first slice (until the next epoch tick, at most EPOCH_TICK)
        // runs right here: most scripts finish within it, and a hop to the
        // blocking pool cost ~10% of service CPU in the benchmark.
        let outcome = match poll_once(call.as_mut()).await {
            Some(outcome) => outcome,
            // Still running: the guest yielded at an epoch tick (CPU-bound)
            // or waits in a host call. The rest runs on a blocking-pool
            // thread, so a CPU-bound guest holds a reactor worker for one
            // tick at most.
            None => {
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || runtime.block_on(call))
                    .await
                    .map_err(|error| {
                        RuntimeError::Internal(format!("wasm execution thread failed: {error}"))
                    })?
            }
        };
        if let Some(module) = on_baseline {
            if module
                .baseline
                .as_ref()
                .is_some_and(|baseline| baseline.ran(started.elapsed()))
            {
                self.request_tier_up(&module);
            }
        }
        outcome
    }

    async fn run_guest(
        &self,
        module: &LoadedModule,
        input: String,
        limits: &Limits,
    ) -> Result<Output, RuntimeError> {
        let stdout = BoundedPipe::new(limits.max_result_bytes, OnOverflow::Trap);
        let stderr = BoundedPipe::new(limits.max_log_bytes, OnOverflow::Truncate);
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(input))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .arg("script")
            .build_p1();
        let mut store = self.new_store(module, wasi, limits, Instant::now() + limits.timeout);

        let call = async {
            let instance = module
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(CallError::Instantiate)?;
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .map_err(CallError::Run)?;
            start
                .call_async(&mut store, ())
                .await
                .map_err(CallError::Run)
        };
        let timed = tokio::time::timeout(limits.timeout + HOST_WAIT_MARGIN, call).await;
        let outcome = match timed {
            Err(_elapsed) => {
                return Err(RuntimeError::Timeout {
                    timeout_ms: millis(limits.timeout),
                })
            }
            Ok(Ok(())) => Ok(()),
            Ok(Err(CallError::Instantiate(error)))
                if error.downcast_ref::<Trap>().is_none()
                    && store.data().limiter.denied_memory.is_none() =>
            {
                return Err(RuntimeError::Internal(format!(
                    "could not instantiate the wasm module: {error:#}"
                )));
            }
            Ok(Err(CallError::Instantiate(error) | CallError::Run(error))) => Err(error),
        };
        let GuestLimiter {
            memory_bytes,
            denied_memory,
        } = store.data().limiter;
        drop(store);

        let (stderr_bytes, logs_truncated) = stderr.take();
        let logs = log_lines(&stderr_bytes, logs_truncated, limits.max_log_bytes);
        if let Some(desired) = denied_memory {
            return Err(RuntimeError::ResourceLimit {
                kind: LimitKind::Memory,
                detail: format!(
                    "the module tried to grow its memory to {desired} bytes; the limit is \
                     {memory_bytes} bytes"
                ),
            });
        }
        if stdout.overflowed() {
            return Err(RuntimeError::ResourceLimit {
                kind: LimitKind::ResultSize,
                detail: format!(
                    "the module wrote more than {} bytes to stdout",
                    limits.max_result_bytes
                ),
            });
        }
        if let Err(error) = outcome {
            if let Some(trap) = error.downcast_ref::<Trap>() {
                if *trap == Trap::Interrupt {
                    return Err(RuntimeError::Timeout {
                        timeout_ms: millis(limits.timeout),
                    });
                }
                return Err(script_error(trap.to_string(), logs));
            }
            match error.downcast_ref::<I32Exit>() {
                Some(I32Exit(0)) => {}
                Some(I32Exit(code)) => {
                    return Err(script_error(
                        format!("the module exited with code {code}"),
                        logs,
                    ))
                }
                None => return Err(script_error(format!("{error:#}"), logs)),
            }
        }

        let (stdout_bytes, _) = stdout.take();
        if stdout_bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(script_error(
                "the module wrote nothing to stdout; its result JSON is expected there".to_string(),
                logs,
            ));
        }
        match serde_json::from_slice(&stdout_bytes) {
            Ok(result) => Ok(Output { result, logs }),
            Err(error) => Err(script_error(
                format!("the module's stdout is not valid JSON: {error}"),
                logs,
            )),
        }
    }
}

/// Advances the engines' epochs every [`EPOCH_TICK`] until they are gone
/// or the runtime shuts down. A plain thread: it must keep ticking while
/// every tokio worker is busy.
fn spawn_epoch_ticker(engines: &[&Engine], stop: Arc<AtomicBool>) -> Result<(), String> {
    let engines: Vec<_> = engines.iter().map(|engine| engine.weak()).collect();
    std::thread::Builder::new()
        .name("wasm-epoch".to_string())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                let mut alive = false;
                for engine in engines.iter().filter_map(|engine| engine.upgrade()) {
                    engine.increment_epoch();
                    alive = true;
                }
                if !alive {
                    break;
                }
            }
        })
        .map(|_detached| ())
        .map_err(|error| format!("could not start the wasm epoch thread: {error}"))
}

/// Starts the thread that compiles baseline modules again with Cranelift,
/// one at a time. It ends when the engine (the queue's sender) is dropped.
fn spawn_tier_up_thread() -> Result<SyncSender<TierUpJob>, String> {
    let (queue, jobs) = mpsc::sync_channel::<TierUpJob>(TIER_UP_QUEUE);
    std::thread::Builder::new()
        .name("wasm-tier-up".to_string())
        .spawn(move || {
            // SAFETY: setpriority only reads its integer arguments. On
            // Linux, PRIO_PROCESS with 0 is the calling thread alone.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, TIER_UP_NICE) } != 0 {
                tracing::debug!(
                    error = %std::io::Error::last_os_error(),
                    "the wasm tier-up thread keeps its priority"
                );
            }
            while let Ok(job) = jobs.recv() {
                job.engine.tier_up(job.module, &job.runtime);
            }
        })
        .map(|_detached| queue)
        .map_err(|error| format!("could not start the wasm tier-up thread: {error}"))
}

/// Polls `future` once: its output if it finished, `None` if it is pending
/// (its waker then belongs to the caller's task; whoever polls it next
/// registers their own).
async fn poll_once<F: Future + Unpin>(mut future: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match Pin::new(&mut future).poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn log_lines(bytes: &[u8], truncated: bool, max_log_bytes: usize) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect();
    if truncated {
        lines.push(format!("[logs truncated at {max_log_bytes} bytes]"));
    }
    lines
}

fn initialization(message: String) -> RuntimeError {
    RuntimeError::Initialization {
        message,
        location: SourceLocation::default(),
    }
}

fn script_error(message: String, logs: Vec<String>) -> RuntimeError {
    RuntimeError::Script {
        message,
        location: SourceLocation::default(),
        stack_trace: None,
        logs,
    }
}

#[cfg(test)]
mod tests;
