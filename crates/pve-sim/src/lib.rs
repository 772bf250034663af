//! Proxmox VE simulator: serves the real `/api2/json` routes over HTTPS with real state, tasks,
//! locks, permissions and schema validation, so provision (and its CI) can run without hardware.
//!
//! Start one with [`Simulator::start`]; the `provision` binary embeds it for `--simulate` and
//! `provision sim serve` ([`ServeArgs`], [`serve`]).

pub mod inventory;
pub mod iso9660;
pub mod propstring;
pub mod schema;

mod guest;
mod journal;
mod persist;
mod router;
mod serve;
mod state;
mod tls;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use inventory::Inventory;
pub use serve::{ServeArgs, ServeError, serve};

/// How tasks complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SimMode {
    /// Tasks finish after their simulated duration (scaled by [`SimConfig::time_scale`]).
    #[default]
    Auto,
    /// Tasks run until a test finishes or fails them through the [`Stepper`].
    Explicit,
}

/// Everything a simulator run is made of.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub inventory: Inventory,
    /// 1.0 = realistic durations; 0.01 = 100× faster.
    pub time_scale: f64,
    /// Probability that any request answers 500 before acting.
    pub fail_rate: f64,
    /// Probability that a task fails (it then changes nothing).
    pub task_fail_rate: f64,
    /// Added to every request.
    pub latency_ms: u64,
    /// One JSON line per request.
    pub request_log: Option<PathBuf>,
    /// Loaded at start when present; written atomically by one writer thread shortly after
    /// each change and on shutdown (see the crate README, "Persistence").
    pub state_file: Option<PathBuf>,
    pub mode: SimMode,
    pub listen: SocketAddr,
    /// Seeds the failure injection and generated identifiers (MACs, UUIDs).
    pub seed: u64,
}

impl SimConfig {
    /// A config for `inventory` with realistic timing and no failure injection.
    pub fn new(inventory: Inventory) -> SimConfig {
        SimConfig {
            inventory,
            time_scale: 1.0,
            fail_rate: 0.0,
            task_fail_rate: 0.0,
            latency_ms: 0,
            request_log: None,
            state_file: None,
            mode: SimMode::Auto,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 0,
        }
    }
}

/// Errors starting or driving the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot generate the TLS certificate")]
    Certificate(#[source] rcgen::Error),
    #[error("invalid TLS configuration")]
    Tls(#[source] rustls::Error),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read state file {path}")]
    StateRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is not valid")]
    StateParse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot open request log {path}")]
    RequestLog {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the state file writer")]
    StateWriter(#[source] std::io::Error),
    #[error("no running task {0}")]
    NoSuchTask(String),
}

/// One request as the simulator received it (also one JSON line of the request log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedRequest {
    pub method: String,
    /// Path below `/api2/json`, percent-decoded (`/nodes/pve1/qemu/101/config`).
    pub path: String,
    pub params: serde_json::Map<String, Value>,
    pub status: u16,
}

/// A NoCloud seed read from the ISO attached to a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCloudSeed {
    pub user_data: String,
    pub meta_data: String,
    pub network_config: Option<String>,
}

/// What a guest backend learns when a VM has started.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestBoot {
    pub node: String,
    pub vmid: u32,
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub seed: Option<NoCloudSeed>,
    /// Addresses from `ipconfigN` or the seed's network-config.
    pub addresses: Vec<(IpAddr, u8)>,
}

/// Something that plays the guests (e.g. a fake SSH server per VM). Called outside any lock.
pub trait GuestBackend: Send + Sync {
    fn vm_started(&self, vm: &GuestBoot);
    fn vm_stopped(&self, node: &str, vmid: u32);
    /// Contents of `path` in the guest for `agent/file-read`; `None` falls back to what the
    /// simulator derives from the seed (hostname, SSH host public keys).
    fn read_file(&self, _node: &str, _vmid: u32, _path: &str) -> Option<Vec<u8>> {
        None
    }
}

/// A task as the [`Stepper`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningTask {
    pub upid: String,
    pub node: String,
    /// `qmcreate`, `qmclone`, `qmstart` ...
    pub kind: String,
    /// The VM id or volume the task works on.
    pub id: String,
    pub held: bool,
}

pub(crate) type Shared = Arc<state::Shared>;

/// Controls tasks from tests: in [`SimMode::Explicit`] nothing completes by time.
#[derive(Clone)]
pub struct Stepper {
    shared: Shared,
}

impl Stepper {
    /// Tasks still running, oldest first.
    pub fn running_tasks(&self) -> Vec<RunningTask> {
        self.shared.running_tasks()
    }

    /// Holds the next task of `kind` (`qmconfig`, `qmstart` …) from its start, as
    /// [`Stepper::hold`] would: for a task whose due time could pass before `hold` is called.
    pub fn hold_next(&self, kind: &str) {
        self.shared.hold_next(kind);
    }

    /// Keeps a task running past its due time (Auto mode) until finished or failed here.
    pub fn hold(&self, upid: &str) -> Result<(), SimError> {
        self.shared.hold_task(upid)
    }

    /// Completes a running task successfully.
    pub fn finish_ok(&self, upid: &str) -> Result<(), SimError> {
        self.shared.complete_task(upid, None)
    }

    /// Fails a running task with `message` (its exitstatus and last log line); its effects are
    /// rolled back.
    pub fn fail(&self, upid: &str, message: &str) -> Result<(), SimError> {
        self.shared.complete_task(upid, Some(message.to_owned()))
    }

    /// Waits until a task of `kind` is running, up to `timeout`.
    pub async fn wait_for_running(&self, kind: &str, timeout: Duration) -> Option<RunningTask> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(task) = self.running_tasks().into_iter().find(|t| t.kind == kind) {
                return Some(task);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The simulator entry point.
pub struct Simulator;

impl Simulator {
    /// Binds, generates the certificate and starts serving; returns at once.
    pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        let identity = tls::Identity::generate()?;
        let shared = state::Shared::start(config.clone())?;
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| SimError::Listen {
                addr: config.listen,
                source,
            })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| SimError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Listen {
            addr: config.listen,
            source,
        })?;
        let server = axum_server::from_tcp_rustls(listener, identity.rustls_config()?).map_err(
            |source| SimError::Listen {
                addr: config.listen,
                source,
            },
        )?;
        let handle = axum_server::Handle::new();
        let app = router::app(shared.clone());
        let server_task = tokio::spawn({
            let handle = handle.clone();
            async move {
                if let Err(error) = server.handle(handle).serve(app.into_make_service()).await {
                    tracing::error!(%error, "simulator server stopped");
                }
            }
        });
        let ticker = tokio::spawn({
            let shared = shared.clone();
            async move {
                let mut interval = tokio::time::interval(Duration::from_millis(10));
                loop {
                    interval.tick().await;
                    shared.advance();
                }
            }
        });
        Ok(SimHandle {
            addr,
            fingerprint: identity.fingerprint,
            shared,
            handle,
            tasks: Mutex::new(vec![server_task, ticker]),
        })
    }
}

/// A running simulator.
pub struct SimHandle {
    addr: SocketAddr,
    fingerprint: String,
    shared: Shared,
    handle: axum_server::Handle<SocketAddr>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl SimHandle {
    /// `https://127.0.0.1:PORT` (without `/api2/json`).
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// SHA-256 of the certificate (DER) as `AA:BB:…`, like `pvenode cert info` prints it.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.request_log()
    }

    /// Requests that changed (or tried to change) something: every POST, PUT and DELETE.
    pub fn mutating_requests(&self) -> usize {
        self.shared
            .request_log()
            .iter()
            .filter(|r| r.method != "GET")
            .count()
    }

    /// Request body bytes read so far: only authenticated requests (and logins) are read.
    pub fn request_body_bytes(&self) -> u64 {
        self.shared.body_bytes()
    }

    pub fn stepper(&self) -> Stepper {
        Stepper {
            shared: self.shared.clone(),
        }
    }

    pub fn set_guest_backend(&self, backend: Arc<dyn GuestBackend>) {
        self.shared.set_backend(backend);
    }

    /// A VM's current config (as `GET …/config` shows it), for assertions.
    pub fn vm_config(&self, vmid: u32) -> Option<BTreeMap<String, String>> {
        self.shared.vm_config(vmid)
    }

    /// Stops serving, saves the state file.
    pub async fn shutdown(self) {
        self.handle
            .graceful_shutdown(Some(Duration::from_millis(200)));
        let tasks = match self.tasks.lock() {
            Ok(mut tasks) => std::mem::take(&mut *tasks),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        // The server drains its connections; the ticker is stopped outright.
        let mut tasks = tasks.into_iter();
        if let Some(server) = tasks.next() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        for task in tasks {
            task.abort();
            if let Err(error) = task.await
                && !error.is_cancelled()
            {
                tracing::warn!(%error, "simulator task ended abnormally");
            }
        }
        self.shared.flush_snapshot();
    }

    /// Saves what changed since the last save now (what the writer thread does shortly after
    /// each change), for tests.
    pub fn save_state_now(&self) {
        self.shared.flush();
    }

    /// Bytes the simulator wrote to its state file and journal so far, for tests.
    pub fn state_bytes_written(&self) -> u64 {
        self.shared.state_bytes_written()
    }
}

/// The state saved at `path` (the snapshot with its journal replayed) as JSON; `None` when no
/// state was saved there.
pub fn read_state_file(path: &std::path::Path) -> Result<Option<serde_json::Value>, SimError> {
    persist::read_value(path)
}

/// Every (method, path template) the simulator serves, below `/api2/json`.
pub fn routes() -> &'static [(&'static str, &'static str)] {
    router::ROUTES
}
