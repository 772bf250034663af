//! The simulated cluster's state (VMs, volumes, tasks, mappings, pools) and every operation on
//! it, independent of HTTP. Mutating operations have a *begin* part (done when the request is
//! accepted: a VM's config appears with `lock: create`) and a *finish* part (done when its task
//! completes); a failed task rolls the begin part back, so a failed task changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::inventory::{Inventory, NodeSpec};
use crate::propstring;
use crate::{
    GuestBackend, GuestBoot, LoggedRequest, RunningTask, SimConfig, SimError, SimMode, guest,
};

/// An API error, rendered by the router the way Proxmox renders it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub message: String,
    pub errors: Option<BTreeMap<String, String>>,
}

impl ApiError {
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 500,
            message: message.into(),
            errors: None,
        }
    }

    pub fn params(errors: BTreeMap<String, String>) -> ApiError {
        ApiError {
            status: 400,
            message: "Parameter verification failed.".to_owned(),
            errors: Some(errors),
        }
    }

    pub fn param(name: &str, message: impl Into<String>) -> ApiError {
        ApiError::params(BTreeMap::from([(name.to_owned(), message.into())]))
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 401,
            message: message.into(),
            errors: None,
        }
    }

    pub fn forbidden(path: &str, privilege: &str) -> ApiError {
        ApiError {
            status: 403,
            message: format!("Permission check failed ({path}, {privilege})"),
            errors: None,
        }
    }

    pub fn not_implemented(method: &str, path: &str) -> ApiError {
        ApiError {
            status: 501,
            message: format!(
                "Method '{method} /{}' not implemented",
                path.trim_start_matches('/')
            ),
            errors: None,
        }
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Simulated durations in seconds at `time_scale` 1.
pub(crate) mod durations {
    pub const CREATE: f64 = 3.0;
    pub const CREATE_IMPORT: f64 = 20.0;
    pub const CLONE: f64 = 25.0;
    pub const DOWNLOAD: f64 = 30.0;
    pub const UPLOAD: f64 = 2.0;
    pub const START: f64 = 4.0;
    pub const STOP: f64 = 2.0;
    pub const SHUTDOWN: f64 = 5.0;
    pub const DELETE: f64 = 3.0;
    pub const RESIZE: f64 = 1.0;
    pub const CONFIG: f64 = 1.0;
    pub const VOLUME_DELETE: f64 = 1.0;
    /// From a finished start task until the guest agent answers.
    pub const BOOT: f64 = 15.0;
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// Memory the host itself keeps (kernel, pve services, ZFS ARC is not modelled).
const HOST_RESERVED_MIB: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PowerState {
    Running,
    Stopped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Vm {
    pub vmid: u32,
    pub node: String,
    pub config: BTreeMap<String, String>,
    pub power: PowerState,
    /// A start task is running.
    #[serde(default)]
    pub starting: bool,
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    /// When the guest agent starts answering.
    #[serde(default)]
    pub booted_at_ms: Option<u64>,
    /// 1 GiB / 2 MiB hugepages taken per host NUMA node while running: (numa, size_kib) → pages.
    #[serde(default)]
    pub hugepages: BTreeMap<String, u64>,
    /// PCI devices (`0000:41:00`) reserved while running.
    #[serde(default)]
    pub pci_in_use: Vec<String>,
    #[serde(default)]
    pub pool: Option<String>,
    /// The network-config cloud-init applied at the first boot with a NoCloud seed: the guest
    /// keeps it on its disk, so later boots without the seed keep the same addresses.
    #[serde(default)]
    pub guest_network_config: Option<String>,
}

impl Vm {
    pub fn lock(&self) -> Option<&str> {
        self.config.get("lock").map(String::as_str)
    }

    pub fn name(&self) -> String {
        self.config
            .get("name")
            .cloned()
            .unwrap_or_else(|| format!("VM{}", self.vmid))
    }

    pub fn memory_mib(&self) -> u64 {
        memory_mib(&self.config)
    }

    pub fn cpus(&self) -> u64 {
        let number = |key: &str| {
            self.config
                .get(key)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1)
        };
        number("cores") * number("sockets")
    }

    pub fn is_template(&self) -> bool {
        self.config.get("template").map(String::as_str) == Some("1")
    }

    pub fn running_or_starting(&self) -> bool {
        self.power == PowerState::Running || self.starting
    }
}

pub(crate) fn memory_mib(config: &BTreeMap<String, String>) -> u64 {
    config
        .get("memory")
        .and_then(|value| {
            let entries = propstring::parse(value).ok()?;
            propstring::get(&entries, "current", Some("current"))?
                .parse()
                .ok()
        })
        .unwrap_or(512)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Volume {
    pub volid: String,
    /// `None` on a shared storage.
    pub node: Option<String>,
    pub content: String,
    pub format: String,
    pub size: u64,
    #[serde(default)]
    pub vmid: Option<u32>,
    pub ctime: u64,
    /// Kept for ISO images (NoCloud seeds) so the guest can read them; persisted as the seed's
    /// files without private keys ([`crate::persist::volume_data`]).
    #[serde(default, with = "crate::persist::volume_data")]
    pub data: Option<Vec<u8>>,
}

/// What a task does when it completes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum TaskAction {
    Create {
        vmid: u32,
    },
    Clone {
        source: u32,
        target: u32,
    },
    Start {
        vmid: u32,
    },
    Stop {
        vmid: u32,
    },
    Delete {
        vmid: u32,
    },
    Resize {
        vmid: u32,
        disk: String,
        bytes: u64,
    },
    Config {
        vmid: u32,
        changes: BTreeMap<String, Option<String>>,
    },
    AddVolume {
        volume: Box<Volume>,
    },
    DeleteVolume {
        key: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Task {
    pub upid: String,
    pub node: String,
    pub kind: String,
    pub id: String,
    pub user: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: u64,
    pub running: bool,
    #[serde(default)]
    pub exitstatus: Option<String>,
    /// When the task stopped (seconds since the epoch), for `GET /nodes/{node}/tasks`.
    #[serde(default)]
    pub endtime: Option<u64>,
    pub log: Vec<String>,
    pub due_ms: u64,
    #[serde(default)]
    pub held: bool,
    /// A failure decided when the task was accepted (start checks, injected failures).
    #[serde(default)]
    pub doomed: Option<String>,
    pub action: TaskAction,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Mapping {
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    pub map: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Pool {
    pub poolid: String,
    #[serde(default)]
    pub comment: Option<String>,
}

/// Everything persisted in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub inventory: Inventory,
    pub vms: BTreeMap<u32, Vm>,
    /// Keyed by [`volume_key`].
    pub volumes: BTreeMap<String, Volume>,
    pub tasks: Vec<Task>,
    pub mappings: BTreeMap<String, Mapping>,
    pub pools: BTreeMap<String, Pool>,
    /// Signs tickets and CSRF tokens.
    pub secret: String,
    pub next_pid: u32,
    /// Wall-clock start of the simulated cluster (node uptime).
    pub boot_ms: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `node/volid` for node-local storages, `volid` for shared ones.
pub(crate) fn volume_key(node: Option<&str>, volid: &str) -> String {
    match node {
        Some(node) => format!("{node}/{volid}"),
        None => volid.to_owned(),
    }
}

/// Formats a size like Proxmox writes `size=` in a disk's config.
pub(crate) fn format_size(bytes: u64) -> String {
    if bytes.is_multiple_of(GIB) {
        format!("{}G", bytes / GIB)
    } else if bytes.is_multiple_of(MIB) {
        format!("{}M", bytes / MIB)
    } else if bytes.is_multiple_of(1024) {
        format!("{}K", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// Parses `32G`, `+10G`, `512M`, `1T`, `1024` (bytes) into bytes.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((index, _)) => text.split_at(index),
        None => (text, ""),
    };
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "" => 1.0,
        "K" => 1024.0,
        "M" => MIB as f64,
        "G" => GIB as f64,
        "T" => (GIB * 1024) as f64,
        _ => return None,
    };
    Some((number * factor) as u64)
}

pub(crate) const DISK_PREFIXES: &[&str] = &["scsi", "virtio", "sata", "ide", "efidisk", "tpmstate"];

pub(crate) fn is_disk_key(key: &str) -> bool {
    DISK_PREFIXES.iter().any(|prefix| {
        key.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    })
}

/// Events delivered to the guest backend once the state lock is released.
pub(crate) enum Event {
    Started(Box<GuestBoot>),
    Stopped(String, u32),
}

pub(crate) struct Shared {
    pub config: SimConfig,
    state: Mutex<State>,
    log: Mutex<Vec<LoggedRequest>>,
    log_file: Mutex<Option<std::fs::File>>,
    backend: Mutex<Option<Arc<dyn GuestBackend>>>,
    rng: Mutex<StdRng>,
    /// The single writer of the state file, if any.
    writer: Option<crate::persist::Writer>,
    /// Request body bytes read (after authentication).
    body_bytes: std::sync::atomic::AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Shared {
    /// Loads the state file (if any) and starts its writer thread.
    pub fn start(config: SimConfig) -> Result<Arc<Shared>, SimError> {
        let shared = Arc::new(Shared::new(config)?);
        if let Some(writer) = &shared.writer {
            writer
                .spawn(Arc::downgrade(&shared))
                .map_err(SimError::StateWriter)?;
        }
        Ok(shared)
    }

    fn new(config: SimConfig) -> Result<Shared, SimError> {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut loaded = match &config.state_file {
            Some(path) => crate::persist::load(path)?,
            None => None,
        };
        if let Some(state) = loaded.as_mut() {
            crate::persist::apply_credentials(state, &config.inventory);
        }
        let fresh = loaded.is_none();
        let state = loaded.unwrap_or_else(|| State {
            pools: config
                .inventory
                .pools
                .iter()
                .map(|p| {
                    (
                        p.clone(),
                        Pool {
                            poolid: p.clone(),
                            comment: None,
                        },
                    )
                })
                .collect(),
            inventory: config.inventory.clone(),
            vms: BTreeMap::new(),
            volumes: BTreeMap::new(),
            tasks: Vec::new(),
            mappings: BTreeMap::new(),
            secret: hex::encode(rng.random::<[u8; 16]>()),
            next_pid: 0x1000 + (config.seed % 0x1000) as u32,
            boot_ms: now_ms().saturating_sub(3 * 86_400_000),
        });
        let log_file = match &config.request_log {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| SimError::RequestLog {
                        path: path.display().to_string(),
                        source,
                    })?,
            ),
            None => None,
        };
        let writer = config.state_file.clone().map(crate::persist::Writer::new);
        let shared = Shared {
            config,
            state: Mutex::new(state),
            log: Mutex::new(Vec::new()),
            log_file: Mutex::new(log_file),
            backend: Mutex::new(None),
            rng: Mutex::new(rng),
            writer,
            body_bytes: std::sync::atomic::AtomicU64::new(0),
        };
        if !fresh {
            shared.settle_after_load();
        }
        Ok(shared)
    }

    /// Tasks that were running when the previous process stopped complete now, in order, as
    /// they would have (a doomed task fails); VMs that were booting count as booted.
    fn settle_after_load(&self) {
        let mut state = lock(&self.state);
        let upids: Vec<String> = state
            .tasks
            .iter()
            .filter(|t| t.running)
            .map(|t| t.upid.clone())
            .collect();
        for upid in upids {
            let doomed = state
                .tasks
                .iter()
                .find(|t| t.upid == upid)
                .and_then(|t| t.doomed.clone());
            // No guest backend exists yet: events are dropped on purpose.
            let _events = complete(&mut state, &upid, doomed, self.config.time_scale);
        }
        let now = now_ms();
        for vm in state.vms.values_mut() {
            if let Some(booted) = vm.booted_at_ms.as_mut() {
                *booted = (*booted).min(now);
            }
        }
        drop(state);
        self.save();
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub fn set_backend(&self, backend: Arc<dyn GuestBackend>) {
        *lock(&self.backend) = Some(backend);
    }

    pub fn random_unit(&self) -> f64 {
        lock(&self.rng).random::<f64>()
    }

    pub fn random_bytes<const N: usize>(&self) -> [u8; N] {
        lock(&self.rng).random::<[u8; N]>()
    }

    pub fn log_request(&self, entry: LoggedRequest) {
        if let Some(file) = lock(&self.log_file).as_mut()
            && let Ok(line) = serde_json::to_string(&entry)
            && let Err(error) = writeln!(file, "{line}")
        {
            tracing::warn!(%error, "cannot write the request log");
        }
        lock(&self.log).push(entry);
    }

    pub fn request_log(&self) -> Vec<LoggedRequest> {
        lock(&self.log).clone()
    }

    pub fn vm_config(&self, vmid: u32) -> Option<BTreeMap<String, String>> {
        self.state().vms.get(&vmid).map(|vm| vm.config.clone())
    }

    pub fn count_body_bytes(&self, bytes: usize) {
        self.body_bytes
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn body_bytes(&self) -> u64 {
        self.body_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that the state changed: the writer thread saves a snapshot soon
    /// ([`crate::persist`]).
    pub fn save(&self) {
        if let Some(writer) = &self.writer {
            writer.mark_dirty();
        }
    }

    /// Writes the state file now, on the caller's thread.
    pub fn flush(&self) {
        if let Some(writer) = &self.writer {
            writer.write(&self.state);
        }
    }

    /// Completes every task that is due; delivers guest events; saves when anything changed.
    pub fn advance(&self) {
        if self.config.mode == SimMode::Explicit {
            return;
        }
        let now = now_ms();
        let mut events = Vec::new();
        let mut changed = false;
        {
            let mut state = self.state();
            let due: Vec<(String, Option<String>)> = state
                .tasks
                .iter()
                .filter(|t| t.running && !t.held && t.due_ms <= now)
                .map(|t| (t.upid.clone(), t.doomed.clone()))
                .collect();
            for (upid, doomed) in due {
                events.extend(complete(&mut state, &upid, doomed, self.config.time_scale));
                changed = true;
            }
        }
        if changed {
            self.save();
        }
        self.deliver(events);
    }

    pub fn deliver(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let backend = lock(&self.backend).clone();
        let Some(backend) = backend else {
            return;
        };
        for event in events {
            match event {
                Event::Started(boot) => backend.vm_started(&boot),
                Event::Stopped(node, vmid) => backend.vm_stopped(&node, vmid),
            }
        }
    }

    /// A file the guest backend serves for `agent/file-read`, if any.
    pub fn backend_read_file(&self, node: &str, vmid: u32, path: &str) -> Option<Vec<u8>> {
        let backend = lock(&self.backend).clone()?;
        backend.read_file(node, vmid, path)
    }

    pub fn running_tasks(&self) -> Vec<RunningTask> {
        self.state()
            .tasks
            .iter()
            .filter(|t| t.running)
            .map(|t| RunningTask {
                upid: t.upid.clone(),
                node: t.node.clone(),
                kind: t.kind.clone(),
                id: t.id.clone(),
                held: t.held,
            })
            .collect()
    }

    pub fn hold_task(&self, upid: &str) -> Result<(), SimError> {
        let mut state = self.state();
        let task = state
            .tasks
            .iter_mut()
            .find(|t| t.upid == upid && t.running)
            .ok_or_else(|| SimError::NoSuchTask(upid.to_owned()))?;
        task.held = true;
        Ok(())
    }

    pub fn complete_task(&self, upid: &str, failure: Option<String>) -> Result<(), SimError> {
        let events = {
            let mut state = self.state();
            let task = state
                .tasks
                .iter()
                .find(|t| t.upid == upid && t.running)
                .ok_or_else(|| SimError::NoSuchTask(upid.to_owned()))?;
            let failure = failure.or_else(|| task.doomed.clone());
            complete(&mut state, upid, failure, self.config.time_scale)
        };
        self.save();
        self.deliver(events);
        Ok(())
    }

    /// Registers a task; in Auto mode it completes after `seconds × time_scale`.
    pub fn spawn_task(
        &self,
        state: &mut State,
        spec: TaskSpec,
        action: TaskAction,
        mut doomed: Option<String>,
    ) -> String {
        if doomed.is_none()
            && self.config.task_fail_rate > 0.0
            && self.random_unit() < self.config.task_fail_rate
        {
            doomed = Some("simulated task failure (--task-fail-rate)".to_owned());
        }
        state.next_pid += 1 + (self.random_unit() * 16.0) as u32;
        let now = now_ms();
        let starttime = now / 1000;
        let pstart = (now.saturating_sub(state.boot_ms)) / 10;
        let pid = state.next_pid;
        let upid = format!(
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            spec.node, pid, pstart, starttime, spec.kind, spec.id, spec.user
        );
        let due_ms = match self.config.mode {
            SimMode::Auto => now + (spec.seconds * self.config.time_scale * 1000.0) as u64,
            SimMode::Explicit => u64::MAX,
        };
        let mut log = spec.log;
        if log.is_empty() {
            log.push(format!("starting task {}", spec.kind));
        }
        state.tasks.push(Task {
            upid: upid.clone(),
            node: spec.node,
            kind: spec.kind,
            id: spec.id,
            user: spec.user,
            pid,
            pstart,
            starttime,
            running: true,
            exitstatus: None,
            endtime: None,
            log,
            due_ms,
            held: false,
            doomed,
            action,
        });
        // Keep the task list bounded like Proxmox's active task index.
        if state.tasks.len() > 5000 {
            let finished = state.tasks.iter().position(|t| !t.running);
            if let Some(index) = finished {
                state.tasks.remove(index);
            }
        }
        upid
    }
}

pub(crate) struct TaskSpec {
    pub node: String,
    pub kind: String,
    pub id: String,
    pub user: String,
    pub seconds: f64,
    pub log: Vec<String>,
}

/// Finishes (or fails and rolls back) a running task.
pub(crate) fn complete(
    state: &mut State,
    upid: &str,
    failure: Option<String>,
    time_scale: f64,
) -> Vec<Event> {
    let Some(index) = state.tasks.iter().position(|t| t.upid == upid && t.running) else {
        return Vec::new();
    };
    let action = state.tasks[index].action.clone();
    let mut events = Vec::new();
    let outcome = match failure {
        Some(message) => {
            rollback(state, &action);
            Err(message)
        }
        None => finish(state, &action, time_scale, &mut events),
    };
    let task = &mut state.tasks[index];
    task.running = false;
    task.held = false;
    task.endtime = Some(now_ms() / 1000);
    match outcome {
        Ok(lines) => {
            task.log.extend(lines);
            task.log.push("TASK OK".to_owned());
            task.exitstatus = Some("OK".to_owned());
        }
        Err(message) => {
            task.log.push(message.clone());
            task.log.push(format!("TASK ERROR: {message}"));
            task.exitstatus = Some(message);
            events.clear();
        }
    }
    // The image now lives in its volume (or was refused): the finished task keeps no copy.
    if let TaskAction::AddVolume { volume } = &mut task.action {
        volume.data = None;
    }
    crate::persist::prune_finished_tasks(&mut state.tasks);
    events
}

fn finish(
    state: &mut State,
    action: &TaskAction,
    time_scale: f64,
    events: &mut Vec<Event>,
) -> Result<Vec<String>, String> {
    match action {
        TaskAction::Create { vmid } => {
            if let Some(vm) = state.vms.get_mut(vmid) {
                vm.config.remove("lock");
            }
            Ok(Vec::new())
        }
        TaskAction::Clone { source, target } => {
            if let Some(vm) = state.vms.get_mut(target) {
                vm.config.remove("lock");
            }
            Ok(vec![format!("clone of VM {source} to {target} finished")])
        }
        TaskAction::Start { vmid } => {
            let Some(vm) = state.vms.get_mut(vmid) else {
                return Err(format!("VM {vmid} does not exist"));
            };
            vm.starting = false;
            vm.power = PowerState::Running;
            let now = now_ms();
            vm.started_at_ms = Some(now);
            vm.booted_at_ms = Some(now + (durations::BOOT * time_scale * 1000.0) as u64);
            let snapshot = vm.clone();
            let boot = guest::boot_info(state, &snapshot);
            if let Some(network) = boot.seed.as_ref().and_then(|s| s.network_config.clone())
                && let Some(vm) = state.vms.get_mut(vmid)
                && vm.guest_network_config.is_none()
            {
                vm.guest_network_config = Some(network);
            }
            events.push(Event::Started(Box::new(boot)));
            Ok(Vec::new())
        }
        TaskAction::Stop { vmid } => {
            if let Some(vm) = state.vms.get_mut(vmid) {
                stop_vm(vm);
                events.push(Event::Stopped(vm.node.clone(), *vmid));
            }
            Ok(Vec::new())
        }
        TaskAction::Delete { vmid } => {
            if let Some(vm) = state.vms.remove(vmid) {
                let node = vm.node.clone();
                state.volumes.retain(|_, volume| {
                    !(volume.vmid == Some(*vmid)
                        && volume.content == "images"
                        && volume.node.as_deref().is_none_or(|n| n == node))
                });
            }
            Ok(vec![format!("destroyed VM {vmid}")])
        }
        TaskAction::Resize { vmid, disk, bytes } => {
            let Some(vm) = state.vms.get_mut(vmid) else {
                return Err(format!("VM {vmid} does not exist"));
            };
            let Some(value) = vm.config.get(disk).cloned() else {
                return Err(format!("disk '{disk}' does not exist"));
            };
            let Ok(mut entries) = propstring::parse(&value) else {
                return Err(format!("unable to parse drive options '{value}'"));
            };
            set_entry(&mut entries, "size", &format_size(*bytes));
            let volid = propstring::get(&entries, "file", Some("file")).map(str::to_owned);
            vm.config
                .insert(disk.clone(), propstring::serialize(&entries));
            let node = vm.node.clone();
            if let Some(volid) = volid
                && let Some(volume) = find_volume_mut(state, &node, &volid)
            {
                volume.size = *bytes;
            }
            Ok(vec![format!("resized {disk} to {}", format_size(*bytes))])
        }
        TaskAction::Config { vmid, changes } => {
            let Some(vm) = state.vms.get_mut(vmid) else {
                return Err(format!("VM {vmid} does not exist"));
            };
            for (key, value) in changes {
                match value {
                    Some(value) => {
                        vm.config.insert(key.clone(), value.clone());
                    }
                    None => {
                        vm.config.remove(key);
                    }
                }
            }
            Ok(Vec::new())
        }
        TaskAction::AddVolume { volume } => {
            let key = volume_key(volume.node.as_deref(), &volume.volid);
            state.volumes.insert(key, (**volume).clone());
            Ok(vec![format!("added volume {}", volume.volid)])
        }
        TaskAction::DeleteVolume { key } => {
            state.volumes.remove(key);
            Ok(Vec::new())
        }
    }
}

fn rollback(state: &mut State, action: &TaskAction) {
    match action {
        TaskAction::Create { vmid } | TaskAction::Clone { target: vmid, .. } => {
            state.vms.remove(vmid);
            state
                .volumes
                .retain(|_, volume| !(volume.vmid == Some(*vmid) && volume.content == "images"));
        }
        TaskAction::Start { vmid } => {
            if let Some(vm) = state.vms.get_mut(vmid) {
                vm.starting = false;
                vm.hugepages.clear();
                vm.pci_in_use.clear();
            }
        }
        TaskAction::Delete { vmid } => {
            if let Some(vm) = state.vms.get_mut(vmid) {
                vm.config.remove("lock");
            }
        }
        TaskAction::Config { .. }
        | TaskAction::Stop { .. }
        | TaskAction::Resize { .. }
        | TaskAction::AddVolume { .. }
        | TaskAction::DeleteVolume { .. } => {}
    }
}

pub(crate) fn stop_vm(vm: &mut Vm) {
    vm.power = PowerState::Stopped;
    vm.starting = false;
    vm.started_at_ms = None;
    vm.booted_at_ms = None;
    vm.hugepages.clear();
    vm.pci_in_use.clear();
}

pub(crate) fn set_entry(entries: &mut Vec<propstring::Entry>, key: &str, value: &str) {
    match entries.iter_mut().find(|(k, _)| k.as_deref() == Some(key)) {
        Some(entry) => entry.1 = value.to_owned(),
        None => entries.push((Some(key.to_owned()), value.to_owned())),
    }
}

pub(crate) fn find_volume<'a>(state: &'a State, node: &str, volid: &str) -> Option<&'a Volume> {
    state
        .volumes
        .get(&volume_key(Some(node), volid))
        .or_else(|| state.volumes.get(volid))
}

pub(crate) fn find_volume_mut<'a>(
    state: &'a mut State,
    node: &str,
    volid: &str,
) -> Option<&'a mut Volume> {
    let local = volume_key(Some(node), volid);
    if state.volumes.contains_key(&local) {
        state.volumes.get_mut(&local)
    } else {
        state.volumes.get_mut(volid)
    }
}

impl State {
    pub fn node(&self, name: &str) -> ApiResult<&NodeSpec> {
        self.inventory
            .nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| ApiError::internal(format!("no such cluster node '{name}'")))
    }

    /// The VM `vmid` on `node`. A VM missing there answers as `PVE::AbstractConfig::load_config`
    /// dies (pve-guest-common `src/PVE/AbstractConfig.pm`), which every qemu route but clone's
    /// source check reaches first: `Configuration file 'nodes/N/qemu-server/ID.conf' does not
    /// exist`. Clients match on that text (proxmoxer scripts, provision's own client).
    pub fn vm(&self, node: &str, vmid: u32) -> ApiResult<&Vm> {
        self.node(node)?;
        match self.vms.get(&vmid) {
            Some(vm) if vm.node == node => Ok(vm),
            Some(_) | None => Err(ApiError::internal(format!(
                "Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"
            ))),
        }
    }

    pub fn vm_mut(&mut self, node: &str, vmid: u32) -> ApiResult<&mut Vm> {
        self.vm(node, vmid)?;
        self.vms
            .get_mut(&vmid)
            .ok_or_else(|| ApiError::internal(format!("VM {vmid} vanished")))
    }

    pub fn storage(&self, name: &str) -> ApiResult<&crate::inventory::StorageSpec> {
        self.inventory
            .storages
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ApiError::internal(format!("storage '{name}' does not exist")))
    }

    /// Bytes used on a storage instance.
    pub fn storage_used(&self, node: &str, storage: &str) -> u64 {
        let shared = self.storage(storage).is_ok_and(|s| s.shared);
        self.volumes
            .values()
            .filter(|v| v.volid.split(':').next() == Some(storage))
            .filter(|v| shared || v.node.as_deref() == Some(node))
            .map(|v| v.size)
            .sum()
    }

    /// The running task that holds `vmid`'s config file lock: an asynchronous config change
    /// runs inside PVE::AbstractConfig `lock_config` (flock on
    /// `/var/lock/qemu-server/lock-N.conf`); the lock is not a `lock:` value in the config.
    pub fn config_lock_holder(&self, vmid: u32) -> Option<&Task> {
        self.tasks.iter().find(|t| {
            t.running && matches!(t.action, TaskAction::Config { vmid: held, .. } if held == vmid)
        })
    }

    /// A running clone task whose source is `vmid`.
    pub fn clone_holding(&self, vmid: u32) -> Option<&Task> {
        self.tasks.iter().find(|t| {
            t.running && matches!(t.action, TaskAction::Clone { source, .. } if source == vmid)
        })
    }

    /// The config digest `GET …/config` reports and `digest=` checks.
    pub fn digest(config: &BTreeMap<String, String>) -> String {
        let mut hasher = Sha256::new();
        for (key, value) in config {
            hasher.update(key.as_bytes());
            hasher.update(b": ");
            hasher.update(value.as_bytes());
            hasher.update(b"\n");
        }
        hex::encode(&hasher.finalize()[..20])
    }

    /// Host memory (MiB) in use on `node`: host reserve, hugepage pools, non-hugepage guests.
    pub fn memory_used_mib(&self, node: &NodeSpec) -> u64 {
        let hugepage_mib: u64 = node
            .numa_nodes
            .iter()
            .map(|n| u64::from(n.hugepages_1g) * 1024 + u64::from(n.hugepages_2m) * 2)
            .sum();
        let guests: u64 = self
            .vms
            .values()
            .filter(|vm| {
                vm.node == node.name && vm.running_or_starting() && vm.hugepages.is_empty()
            })
            .map(Vm::memory_mib)
            .sum();
        HOST_RESERVED_MIB + hugepage_mib + guests
    }

    /// Free hugepages per (numa id, page size KiB).
    pub fn free_hugepages(&self, node: &NodeSpec) -> BTreeMap<(u32, u64), u64> {
        let mut free = BTreeMap::new();
        for numa in &node.numa_nodes {
            free.insert((numa.id, 1_048_576), u64::from(numa.hugepages_1g));
            free.insert((numa.id, 2048), u64::from(numa.hugepages_2m));
        }
        for vm in self.vms.values().filter(|vm| vm.node == node.name) {
            for (key, pages) in &vm.hugepages {
                if let Some((numa, size)) = key.split_once('/')
                    && let (Ok(numa), Ok(size)) = (numa.parse::<u32>(), size.parse::<u64>())
                    && let Some(entry) = free.get_mut(&(numa, size))
                {
                    *entry = entry.saturating_sub(*pages);
                }
            }
        }
        free
    }

    pub fn json_vm_status(&self, vm: &Vm) -> Value {
        let now = now_ms();
        let uptime = vm
            .started_at_ms
            .filter(|_| vm.power == PowerState::Running)
            .map_or(0, |started| now.saturating_sub(started) / 1000);
        let running = vm.power == PowerState::Running;
        let mut status = json!({
            "vmid": vm.vmid,
            "name": vm.name(),
            "status": if running { "running" } else { "stopped" },
            "qmpstatus": if running { "running" } else { "stopped" },
            "cpus": vm.cpus(),
            "maxmem": vm.memory_mib() * MIB,
            "mem": if running { vm.memory_mib() * MIB / 2 } else { 0 },
            "maxdisk": vm_disk_bytes(vm),
            "disk": 0,
            "uptime": uptime,
            "cpu": 0,
            "netin": 0,
            "netout": 0,
            "diskread": 0,
            "diskwrite": 0,
            "ha": { "managed": 0 },
        });
        if running {
            status["pid"] = json!(10_000 + vm.vmid % 50_000);
        }
        if let Some(lock) = vm.lock() {
            status["lock"] = json!(lock);
        }
        if let Some(tags) = vm.config.get("tags") {
            status["tags"] = json!(tags);
        }
        if vm.is_template() {
            status["template"] = json!(1);
        }
        if guest::agent_enabled(&vm.config) {
            status["agent"] = json!(1);
        }
        status
    }
}

pub(crate) fn vm_disk_bytes(vm: &Vm) -> u64 {
    vm.config
        .iter()
        .filter(|(key, _)| key.starts_with("scsi") || key.starts_with("virtio"))
        .filter_map(|(_, value)| {
            let entries = propstring::parse(value).ok()?;
            parse_size(propstring::get(&entries, "size", None)?)
        })
        .max()
        .unwrap_or(0)
}

/// Checks a start can succeed and reserves hugepages and PCI devices for it. Returns the
/// failure message a Proxmox start task would end with.
pub(crate) fn reserve_for_start(state: &mut State, vmid: u32) -> Result<(), (String, Vec<String>)> {
    let Some(vm) = state.vms.get(&vmid).cloned() else {
        return Err((format!("VM {vmid} does not exist"), Vec::new()));
    };
    let node = match state.node(&vm.node) {
        Ok(node) => node.clone(),
        Err(error) => return Err((error.message, Vec::new())),
    };
    // KVM (qemu-server's config_to_command dies when the node's cpuinfo has no hvm).
    if !node.hvm && vm.config.get("kvm").map(String::as_str) != Some("0") {
        return Err((
            "KVM virtualisation configured, but not available. Either disable in VM configuration or enable in BIOS.".to_owned(),
            Vec::new(),
        ));
    }
    // Bridges.
    for (key, value) in vm.config.iter().filter(|(k, _)| k.starts_with("net")) {
        if let Ok(entries) = propstring::parse(value)
            && let Some(bridge) = propstring::get(&entries, "bridge", None)
            && !node.bridges.iter().any(|b| b == bridge)
        {
            return Err((
                format!("bridge '{bridge}' does not exist"),
                vec![format!("{key}: bridge '{bridge}' does not exist")],
            ));
        }
    }
    // PCI devices.
    let mut reserved: Vec<String> = Vec::new();
    let hostpci: Vec<(String, String)> = vm
        .config
        .iter()
        .filter(|(k, _)| k.starts_with("hostpci"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in hostpci {
        let entries = propstring::parse(&value).map_err(|e| (e.to_string(), Vec::new()))?;
        let candidates: Vec<String> = match propstring::get(&entries, "mapping", None) {
            Some(mapping_id) => {
                let Some(mapping) = state.mappings.get(mapping_id) else {
                    return Err((
                        format!("PCI mapping '{mapping_id}' does not exist"),
                        Vec::new(),
                    ));
                };
                let paths: Vec<String> = mapping
                    .map
                    .iter()
                    .filter_map(|entry| {
                        let entries = propstring::parse(entry).ok()?;
                        (propstring::get(&entries, "node", None)? == node.name)
                            .then(|| propstring::get(&entries, "path", None).map(str::to_owned))?
                    })
                    .collect();
                if paths.is_empty() {
                    return Err((
                        format!(
                            "PCI mapping '{mapping_id}' has no entry for node '{}'",
                            node.name
                        ),
                        Vec::new(),
                    ));
                }
                paths
            }
            None => match propstring::get(&entries, "host", Some("host")) {
                Some(host) => vec![host.split(';').next().unwrap_or(host).to_owned()],
                None => return Err((format!("{key}: no host or mapping"), Vec::new())),
            },
        };
        let mut last_error = None;
        let mut chosen = None;
        for candidate in &candidates {
            match check_pci(state, &node, vmid, candidate, &reserved) {
                Ok(device) => {
                    chosen = Some(device);
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        match chosen {
            Some(device) => reserved.push(device),
            None => {
                let error = last_error.unwrap_or_else(|| "no PCI device available".to_owned());
                return Err((error.clone(), vec![format!("{key}: {error}")]));
            }
        }
    }
    // Memory and hugepages.
    let memory = vm.memory_mib();
    let mut hugepages: BTreeMap<String, u64> = BTreeMap::new();
    if let Some(setting) = vm.config.get("hugepages") {
        if vm.config.get("numa").map(String::as_str) != Some("1") {
            return Err((
                "NUMA needs to be enabled for memory hotplug or hugepages".to_owned(),
                Vec::new(),
            ));
        }
        let free = state.free_hugepages(&node);
        let sizes: Vec<u64> = match setting.as_str() {
            "1024" => vec![1_048_576],
            "2" => vec![2048],
            _ => vec![1_048_576, 2048],
        };
        // Host nodes bound by numaN entries, else any.
        let bound: BTreeMap<u32, u64> = vm
            .config
            .iter()
            .filter(|(k, _)| k.starts_with("numa") && k.len() > 4)
            .filter_map(|(_, v)| {
                let entries = propstring::parse(v).ok()?;
                let host = propstring::get(&entries, "hostnodes", None)?
                    .parse::<u32>()
                    .ok()?;
                let mib = propstring::get(&entries, "memory", None)?
                    .parse::<u64>()
                    .ok()?;
                Some((host, mib))
            })
            .fold(BTreeMap::new(), |mut acc, (host, mib)| {
                *acc.entry(host).or_insert(0) += mib;
                acc
            });
        let mut allocated = false;
        for size_kib in sizes {
            let page_mib = size_kib / 1024;
            let mut plan: BTreeMap<String, u64> = BTreeMap::new();
            let ok = if bound.is_empty() {
                let mut needed = memory.div_ceil(page_mib);
                for numa in &node.numa_nodes {
                    let available = free.get(&(numa.id, size_kib)).copied().unwrap_or(0);
                    let take = available.min(needed);
                    if take > 0 {
                        plan.insert(format!("{}/{size_kib}", numa.id), take);
                        needed -= take;
                    }
                }
                needed == 0
            } else {
                bound.iter().all(|(host, mib)| {
                    let needed = mib.div_ceil(page_mib);
                    let available = free.get(&(*host, size_kib)).copied().unwrap_or(0);
                    plan.insert(format!("{host}/{size_kib}"), needed);
                    available >= needed
                })
            };
            if ok {
                hugepages = plan;
                allocated = true;
                break;
            }
        }
        if !allocated {
            let free_1g: u64 = free
                .iter()
                .filter(|((_, size), _)| *size == 1_048_576)
                .map(|(_, n)| n)
                .sum();
            return Err((
                "hugepage allocation failed".to_owned(),
                vec![format!(
                    "VM {vmid} needs {memory} MiB of hugepages ({setting}); node '{}' has {free_1g} free 1 GiB pages",
                    node.name
                )],
            ));
        }
    } else {
        let total = node.memory_gib * 1024;
        let free = total.saturating_sub(state.memory_used_mib(&node));
        if memory > free {
            return Err((
                "start failed: QEMU exited with code 1".to_owned(),
                vec![
                    "kvm: cannot set up guest memory 'pc.ram': Cannot allocate memory".to_owned(),
                    format!(
                        "not enough memory on node '{}': VM {vmid} needs {memory} MiB, {free} MiB free",
                        node.name
                    ),
                ],
            ));
        }
    }
    if let Some(vm) = state.vms.get_mut(&vmid) {
        vm.starting = true;
        vm.hugepages = hugepages;
        vm.pci_in_use = reserved;
    }
    Ok(())
}

/// Checks one PCI device (`0000:41:00` or `0000:41:00.0`) can be passed to `vmid`; returns the
/// device address without function.
fn check_pci(
    state: &State,
    node: &NodeSpec,
    vmid: u32,
    address: &str,
    reserved_here: &[String],
) -> Result<String, String> {
    let device = address.rsplit_once('.').map_or(address, |(d, _)| d);
    let device = if device.matches(':').count() == 1 {
        format!("0000:{device}")
    } else {
        device.to_owned()
    };
    let functions: Vec<_> = node
        .pci_devices
        .iter()
        .filter(|p| p.id.starts_with(&format!("{device}.")))
        .collect();
    let Some(first) = functions.first() else {
        return Err(format!("no PCI device found for '{device}'"));
    };
    if first.iommugroup < 0 {
        return Err(format!(
            "kvm: -device vfio-pci,host={}: vfio {}: no iommu_group found: Invalid argument",
            first.id, first.id
        ));
    }
    let group = first.iommugroup;
    let foreign: Vec<_> = node
        .pci_devices
        .iter()
        .filter(|p| p.iommugroup == group && !p.id.starts_with(&format!("{device}.")))
        .collect();
    if !foreign.is_empty() {
        return Err(format!(
            "kvm: -device vfio-pci,host={}: vfio {}: group {group} is not viable. Please ensure all devices within the iommu_group are bound to their vfio bus driver.",
            first.id, first.id
        ));
    }
    if reserved_here.contains(&device) {
        return Err(format!(
            "PCI device '{device}' already in use by VMID '{vmid}'"
        ));
    }
    for other in state.vms.values() {
        if other.vmid != vmid
            && other.node == node.name
            && other.running_or_starting()
            && other.pci_in_use.contains(&device)
        {
            return Err(format!(
                "PCI device '{device}' already in use by VMID '{}'",
                other.vmid
            ));
        }
    }
    Ok(device)
}

/// Generates a MAC in Proxmox's default OUI (`BC:24:11`).
pub(crate) fn mac_address(bytes: [u8; 3]) -> String {
    format!(
        "BC:24:11:{:02X}:{:02X}:{:02X}",
        bytes[0], bytes[1], bytes[2]
    )
}

/// A random UUID (v4) string.
pub(crate) fn uuid(bytes: [u8; 16]) -> String {
    let mut b = bytes;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Set of device-ish keys whose value refers to volumes.
pub(crate) fn referenced_volumes(config: &BTreeMap<String, String>) -> BTreeSet<String> {
    config
        .iter()
        .filter(|(key, _)| is_disk_key(key) || key.starts_with("unused"))
        .filter_map(|(_, value)| {
            let entries = propstring::parse(value).ok()?;
            propstring::get(&entries, "file", Some("file")).map(str::to_owned)
        })
        .collect()
}

impl Drop for Shared {
    /// The last changes reach the file even when the simulator is dropped without a shutdown.
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            if writer.is_dirty() {
                writer.write(&self.state);
            }
            writer.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes_round_trip() {
        assert_eq!(parse_size("32G"), Some(32 * GIB));
        assert_eq!(format_size(32 * GIB), "32G");
        assert_eq!(format_size(4 * MIB), "4M");
        assert_eq!(format_size(528 * 1024), "528K");
        assert_eq!(parse_size("1.5G"), Some(GIB + GIB / 2));
    }

    #[test]
    fn uuid_has_version_4() {
        let id = uuid([0xff; 16]);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
