//! [`Shared`]: the state behind its lock, with what surrounds it at run time: configuration,
//! randomness, the request log, the persistence writer, the guest backend, and the clock that
//! completes due tasks.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{GuestBackend, GuestBoot, LoggedRequest, RunningTask, SimConfig, SimError, SimMode};

use super::{Pool, State, Task, TaskAction, TaskSpec, complete, now_ms};

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
    /// Task kinds whose next task is held from its start ([`Shared::hold_next`]).
    hold_next: Mutex<Vec<String>>,
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
            transfers: super::Transfers::default(),
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
            hold_next: Mutex::new(Vec::new()),
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
        // The file's lines also say when (epoch milliseconds), for timelines of a run.
        if let Some(file) = lock(&self.log_file).as_mut() {
            let mut line = serde_json::to_value(&entry).unwrap_or_default();
            if let Some(fields) = line.as_object_mut() {
                fields.insert("ms".to_owned(), now_ms().into());
            }
            if let Err(error) = writeln!(file, "{line}") {
                tracing::warn!(%error, "cannot write the request log");
            }
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

    /// Saves what changed now, on the caller's thread (to the journal).
    pub fn flush(&self) {
        if let Some(writer) = &self.writer {
            writer.write(&self.state, false);
        }
    }

    /// Writes a whole snapshot now (a clean stop): the state file alone is complete.
    pub fn flush_snapshot(&self) {
        if let Some(writer) = &self.writer {
            writer.write(&self.state, true);
        }
    }

    /// Bytes written to the state file and its journal so far.
    pub fn state_bytes_written(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(0, crate::persist::Writer::bytes_written)
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
                let ends = state.transfers.finish(now, &upid);
                apply_ends(&mut state, &ends);
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

    /// The next task of `kind` (`qmconfig`, `qmstart` …) is held from its start, so a test
    /// that holds it cannot lose a race with its due time.
    pub fn hold_next(&self, kind: &str) {
        lock(&self.hold_next).push(kind.to_owned());
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
            let events = complete(&mut state, upid, failure, self.config.time_scale);
            let ends = state.transfers.finish(now_ms(), upid);
            apply_ends(&mut state, &ends);
            events
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
        let held = {
            let mut kinds = lock(&self.hold_next);
            let index = kinds.iter().position(|kind| *kind == spec.kind);
            index.map(|index| kinds.remove(index)).is_some()
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
            held,
            doomed,
            action,
            wget: None,
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

impl Shared {
    /// The task `upid` (just spawned) allocates `allocations` volumes on `storage` on `node`
    /// (each under the storage's lock) and moves `bytes` through it: it now ends when its
    /// transfer does ([`super::bandwidth`]); the seconds it was planned to take become work done
    /// before its bytes flow. The transfers it shares the storage with are re-planned. When its
    /// allocations would wait past the lock's timeout, the task fails then with Proxmox's
    /// message after `failure_prefix` (`unable to create VM 101 - `, `clone failed: `).
    /// In Explicit mode tasks end when a test says so: nothing changes.
    #[allow(clippy::too_many_arguments)]
    pub fn start_transfer(
        &self,
        state: &mut State,
        upid: &str,
        node: &str,
        storage: &crate::inventory::StorageSpec,
        bytes: u64,
        allocations: u32,
        failure_prefix: &str,
    ) {
        if self.config.mode == SimMode::Explicit {
            return;
        }
        let now = now_ms();
        let scale = self.config.time_scale.max(f64::MIN_POSITIVE);
        let Some(task) = state.tasks.iter().find(|t| t.upid == upid && t.running) else {
            return;
        };
        let extra_s = task.due_ms.saturating_sub(now) as f64 / 1000.0 / scale;
        let spec = super::TransferSpec {
            node,
            storage,
            bytes,
            extra_s,
            allocations,
        };
        match state.transfers.start(now, scale, upid, &spec) {
            Ok(ends) => apply_ends(state, &ends),
            Err(timeout) => {
                if let Some(task) = state
                    .tasks
                    .iter_mut()
                    .find(|t| t.upid == upid && t.running && !t.held)
                {
                    task.due_ms = timeout.at_ms;
                    task.doomed = Some(format!("{failure_prefix}{}", timeout.message));
                }
            }
        }
    }
}

/// Moves the planned end of each running task that has a transfer.
fn apply_ends(state: &mut State, ends: &[(String, u64)]) {
    for (upid, end) in ends {
        if let Some(task) = state
            .tasks
            .iter_mut()
            .find(|t| &t.upid == upid && t.running && !t.held)
        {
            task.due_ms = *end;
        }
    }
}

impl Drop for Shared {
    /// The last changes reach the file even when the simulator is dropped without a shutdown.
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            if writer.is_dirty() {
                writer.write(&self.state, true);
            }
            writer.stop();
        }
    }
}
