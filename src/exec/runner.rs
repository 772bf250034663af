//! The [`Runner`] every run shares: the Proxmox client, the locked state, per-node and
//! per-storage slots, retries by error kind, task waiting, and the loop that runs a plan's
//! actions in parallel (`apply` and `down` both go through it).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use tokio::sync::{Mutex, OnceCell, Semaphore};

use crate::plan::{Action, ImageDownload, Plan, PlannedVm, WaveVm, params_hash};
use crate::pve::{NodeName, PveApi, PveError, Upid, VmId};
use crate::state::{State, StateStore, VmPhase, VmRecord};

use super::retry::{Decision, decide};
use super::rolling::{NoGate, RollingGate};
use super::seed::KnownVolumes;
use super::template::TemplateSlot;
use super::{ExecEvent, ExecOptions, InjectedCrash, ProgressSink, SeedSource};

/// A storage's slot key: (node, storage) for a node-local storage, (`None`, storage) for a
/// shared one.
type StorageKey = (Option<NodeName>, String);

pub(super) struct Runner {
    pub(super) api: Arc<dyn PveApi>,
    /// The state; changes go through [`Runner::record`].
    pub(super) store: Mutex<StateStore>,
    /// How many changes the state had in memory, and (the writer's lock) how many of them are
    /// on disk.
    changes: AtomicU64,
    written: Mutex<u64>,
    /// Seed ISOs; a run that creates nothing (`down`) has none.
    pub(super) seeds: Option<Arc<dyn SeedSource>>,
    pub(super) events: Arc<dyn ProgressSink>,
    pub(super) options: ExecOptions,
    pub(super) cluster: String,
    node_slots: BTreeMap<NodeName, Arc<Semaphore>>,
    /// Per storage: shared storages by name, node-local ones by (node, storage).
    storage_slots: Mutex<BTreeMap<StorageKey, Arc<Semaphore>>>,
    shared_storages: BTreeSet<String>,
    /// The plan's downloads by (node, storage), each run at most once.
    pub(super) images: BTreeMap<(NodeName, String), (ImageDownload, OnceCell<()>)>,
    /// The plan's templates by name (clone strategies).
    pub(super) templates: BTreeMap<String, TemplateSlot>,
    pub(super) mutating: AtomicUsize,
    boundaries: AtomicUsize,
    /// Per VM that goes away (destroy or the destroy half of a replace): set once it is gone,
    /// for the creates that wait on it ([`crate::plan::Action::after`]).
    gone: BTreeMap<String, tokio::sync::watch::Sender<bool>>,
    /// The rolling waves' members by VM name: (wave number, member).
    wave_of: BTreeMap<String, (u32, WaveVm)>,
    /// Per wave: how many of its actions are not done yet.
    wave_left: BTreeMap<u32, tokio::sync::watch::Sender<usize>>,
    gate: Arc<dyn RollingGate>,
    /// One task poller per node: every wait on that node's tasks shares its list requests.
    pollers: std::sync::Mutex<BTreeMap<NodeName, crate::pve::NodeTaskPoller>>,
    /// Per (node, storage): the volumes this run knows of ([`Runner::volume_present`]).
    isos: std::sync::Mutex<BTreeMap<(NodeName, String), Arc<KnownVolumes>>>,
    /// The last listing of the cluster's VMs, shared by the address checks ([`super::race`]).
    pub(super) vm_listing: super::race::SharedListing,
    /// Per node: the shortest wait for a guest agent seen so far ([`Runner::booted`]).
    boots: std::sync::Mutex<BTreeMap<NodeName, Duration>>,
}

/// How one action of a run ended.
pub(super) struct ActionDone {
    pub(super) action: Action,
    pub(super) elapsed: Duration,
}

impl Runner {
    pub(super) fn new(
        api: Arc<dyn PveApi>,
        plan: &Plan,
        store: StateStore,
        seeds: Option<Arc<dyn SeedSource>>,
        events: Arc<dyn ProgressSink>,
        options: ExecOptions,
    ) -> Self {
        let node_slots = plan
            .vms
            .iter()
            .map(|vm| vm.node.clone())
            .chain(plan.templates.iter().map(|t| t.node.clone()))
            .chain(plan.actions.iter().map(|a| a.node().to_owned()))
            .map(|node| (node, Arc::new(Semaphore::new(options.per_node.max(1)))))
            .collect();
        let templates = plan
            .templates
            .iter()
            .map(|template| {
                (
                    template.name.clone(),
                    TemplateSlot::new(template, options.clones_per_template),
                )
            })
            .collect();
        let images = plan
            .downloads
            .iter()
            .map(|download| {
                (
                    (download.node.clone(), download.storage.clone()),
                    (download.clone(), OnceCell::new()),
                )
            })
            .collect();
        Self {
            api,
            store: Mutex::new(store),
            changes: AtomicU64::new(0),
            written: Mutex::new(0),
            seeds,
            events,
            options,
            cluster: plan.cluster.clone(),
            node_slots,
            storage_slots: Mutex::new(BTreeMap::new()),
            shared_storages: plan.shared_storages.clone(),
            images,
            templates,
            mutating: AtomicUsize::new(0),
            boundaries: AtomicUsize::new(0),
            gone: plan
                .actions
                .iter()
                .filter(|a| a.removes_vm())
                .map(|a| (a.vm().to_owned(), tokio::sync::watch::Sender::new(false)))
                .collect(),
            wave_of: plan
                .rolling
                .iter()
                .flat_map(|wave| {
                    wave.vms
                        .iter()
                        .map(|member| (member.vm.clone(), (wave.number, member.clone())))
                })
                .collect(),
            wave_left: plan
                .rolling
                .iter()
                .map(|wave| (wave.number, tokio::sync::watch::Sender::new(wave.vms.len())))
                .collect(),
            gate: Arc::new(NoGate),
            pollers: std::sync::Mutex::new(BTreeMap::new()),
            isos: std::sync::Mutex::new(BTreeMap::new()),
            vm_listing: tokio::sync::Mutex::new(None),
            boots: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Ask `gate` around each disruptive action (the default, [`NoGate`], asks nothing).
    pub(super) fn with_gate(mut self, gate: Arc<dyn RollingGate>) -> Self {
        self.gate = gate;
        self
    }

    /// Run one action; a disruptive one waits for the earlier waves, goes through the gate,
    /// and counts towards its wave being done.
    async fn run_rolling(
        &self,
        action: &Action,
        planned: Option<&PlannedVm>,
    ) -> anyhow::Result<()> {
        self.check_interrupt()?;
        let Some((number, member)) = self.wave_of.get(action.vm()) else {
            return self.run_action(action, planned).await;
        };
        for (earlier, left) in self.wave_left.range(..*number) {
            if *left.borrow() > 0 {
                self.step(action.vm(), "wave");
            }
            let mut left = left.subscribe();
            self.until_interrupted(left.wait_for(|left| *left == 0))
                .await?
                .map_err(|_| anyhow!("wave {earlier} did not finish, so {} waits", action.vm()))?;
        }
        self.step(action.vm(), "before disruption");
        self.gate.before_disruption(member).await?;
        self.run_action(action, planned).await?;
        if !matches!(action, Action::Destroy { .. }) {
            self.step(action.vm(), "after recovery");
            self.gate.after_recovery(member).await?;
        }
        if let Some(left) = self.wave_left.get(number) {
            left.send_modify(|left| *left = left.saturating_sub(1));
        }
        Ok(())
    }

    /// Run every action of `plan` in parallel (each VM's chain in order). The first failure
    /// ends the run: everything done so far is in the state, and a re-run continues from
    /// there. The other tasks are cancelled and awaited before returning, so no task still
    /// holds the state (and its lock) when the caller sees the error. An interrupt cancels
    /// nothing: each task stops at its next step boundary, after the Proxmox task it waits
    /// for, and the run ends with [`super::Interrupted`] once all have.
    pub(super) async fn run_actions(
        self: &Arc<Self>,
        plan: &Plan,
    ) -> anyhow::Result<Vec<ActionDone>> {
        let mut tasks = tokio::task::JoinSet::new();
        for action in plan.actions.iter().cloned() {
            let runner = Arc::clone(self);
            let planned = plan.vm(action.vm()).cloned();
            tasks.spawn(async move {
                let started = Instant::now();
                let result = runner.run_rolling(&action, planned.as_ref()).await;
                (action, result, started.elapsed())
            });
        }
        let mut done = Vec::new();
        let mut interrupted = None;
        while let Some(joined) = tasks.join_next().await {
            let outcome =
                joined
                    .context("a VM task panicked")
                    .and_then(|(action, result, elapsed)| {
                        result
                            .with_context(|| format!("{} {}", action.kind().symbol(), action.vm()))
                            .map(|()| ActionDone { action, elapsed })
                    });
            match outcome {
                Ok(action_done) => {
                    self.events.event(ExecEvent::VmDone {
                        vm: action_done.action.vm().to_owned(),
                        elapsed: action_done.elapsed,
                    });
                    done.push(action_done);
                }
                Err(error) if super::is_interrupted(&error) => {
                    interrupted.get_or_insert(error);
                }
                Err(error) => {
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    return Err(error);
                }
            }
        }
        match interrupted {
            Some(error) => Err(error),
            None => Ok(done),
        }
    }

    /// Per action of `plan`: the VM and the steps it announces on the way ([`ExecEvent::Step`]),
    /// for the overall progress. Waits (`wait`, `wave`) are not counted: they may not happen.
    pub(super) fn planned_steps(&self, plan: &Plan) -> Vec<(String, u64)> {
        plan.actions
            .iter()
            .map(|action| {
                let planned = plan.vm(action.vm());
                // create, resize, start, guest, seed cleanup, plus the image and ISO it needs.
                let create = |vm: Option<&PlannedVm>| {
                    5 + vm.map_or(0, |vm| {
                        u64::from(vm.image_download.is_some()) + u64::from(vm.iso.is_some())
                    })
                };
                let own = match action {
                    Action::Create { .. } => create(planned),
                    Action::Replace { .. } => 1 + create(planned),
                    Action::Update {
                        changes,
                        delete,
                        restart,
                        ..
                    } => {
                        4 + u64::from(!changes.is_empty() || !delete.is_empty())
                            + u64::from(*restart)
                    }
                    Action::Destroy { .. } => 1,
                };
                let gate = match (self.wave_of.contains_key(action.vm()), action) {
                    (false, _) => 0,
                    (true, Action::Destroy { .. }) => 1,
                    (true, _) => 2,
                };
                (action.vm().to_owned(), own + gate)
            })
            .collect()
    }

    /// `waiting`, unless the run is interrupted first: a VM waiting for another one (its wave,
    /// the VM it replaces) would otherwise wait forever for a step the interrupt cancelled.
    async fn until_interrupted<T>(&self, waiting: impl Future<Output = T>) -> anyhow::Result<T> {
        let Some(interrupt) = &self.options.interrupt else {
            return Ok(waiting.await);
        };
        tokio::select! {
            done = waiting => Ok(done),
            () = interrupt.fired() => Err(interrupt.interrupted().into()),
        }
    }

    /// The run was interrupted: start nothing new.
    pub(super) fn check_interrupt(&self) -> anyhow::Result<()> {
        match &self.options.interrupt {
            Some(interrupt) => Ok(interrupt.check()?),
            None => Ok(()),
        }
    }

    /// A step boundary: where a crash may happen (test hook), and where an interrupted run
    /// stops.
    pub(super) fn boundary(&self) -> anyhow::Result<()> {
        self.check_interrupt()?;
        let index = self.boundaries.fetch_add(1, Ordering::SeqCst);
        match self.options.fail_after_step {
            Some(limit) if index >= limit => Err(InjectedCrash(index).into()),
            Some(_) | None => Ok(()),
        }
    }

    /// Change the state and have it on disk before returning, as [`StateStore::update`] does;
    /// changes made while another one is being written go to disk together in the next write
    /// (group commit), so VMs that reach a step at the same moment do not queue behind each
    /// other's fsyncs.
    pub(super) async fn record<R>(
        &self,
        change: impl FnOnce(&mut State) -> R,
    ) -> anyhow::Result<R> {
        let (result, wanted) = {
            let mut store = self.store.lock().await;
            let (result, changed) = store.change(change);
            if !changed {
                return Ok(result);
            }
            (result, self.changes.fetch_add(1, Ordering::SeqCst) + 1)
        };
        let mut written = self.written.lock().await;
        if *written >= wanted {
            return Ok(result);
        }
        let (path, bytes, changes) = {
            let store = self.store.lock().await;
            (
                store.path().to_owned(),
                store.snapshot()?,
                self.changes.load(Ordering::SeqCst),
            )
        };
        // Written here, not on a blocking thread: an aborted run (its VM tasks are aborted on
        // the first failure) must not leave a write going on that the next one overlaps.
        crate::state::persist(&path, &bytes)?;
        *written = changes;
        Ok(result)
    }

    pub(super) fn mutated(&self) {
        self.mutating.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn step(&self, vm: &str, step: &'static str) {
        self.events.event(ExecEvent::Step {
            vm: vm.to_owned(),
            step,
        });
    }

    /// Run `attempt` until it succeeds, retrying by error kind.
    pub(super) async fn retrying<T, F, Fut>(
        &self,
        vm: &str,
        step: &'static str,
        mut attempt: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let mut number = 1;
        loop {
            self.check_interrupt()?;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    let decision = match error.downcast_ref::<PveError>() {
                        Some(pve) => decide(pve),
                        None => Decision::Fail,
                    };
                    if decision == Decision::Fail || number >= self.options.max_attempts {
                        return Err(error.context(format!("{step} of {vm}")));
                    }
                    let delay =
                        crate::pve::RetryPolicy::doubling(self.options.backoff).delay(number);
                    self.events.event(ExecEvent::Retry {
                        vm: vm.to_owned(),
                        step,
                        attempt: number,
                        delay,
                        error: format!("{error:#}"),
                    });
                    tokio::time::sleep(delay).await;
                    number += 1;
                }
            }
        }
    }

    pub(super) async fn node_slot(
        &self,
        node: &NodeName,
    ) -> anyhow::Result<tokio::sync::OwnedSemaphorePermit> {
        let semaphore = self
            .node_slots
            .get(node)
            .cloned()
            .unwrap_or_else(|| Arc::new(Semaphore::new(1)));
        let permit = semaphore.acquire_owned().await?;
        // A step that waited for its slot while the run was interrupted does not start.
        self.check_interrupt()?;
        Ok(permit)
    }

    /// A disk-allocation slot on `storage` as seen from `node`: a node-local storage (lvmthin,
    /// dir, ZFS) is a separate disk on every node, a shared one is one for the cluster.
    pub(super) async fn storage_slot(
        &self,
        node: &NodeName,
        storage: &str,
    ) -> anyhow::Result<tokio::sync::OwnedSemaphorePermit> {
        let owner = (!self.shared_storages.contains(storage)).then(|| node.clone());
        let semaphore = {
            let mut slots = self.storage_slots.lock().await;
            Arc::clone(
                slots
                    .entry((owner, storage.to_owned()))
                    .or_insert_with(|| Arc::new(Semaphore::new(self.options.per_storage.max(1)))),
            )
        };
        let permit = semaphore.acquire_owned().await?;
        self.check_interrupt()?;
        Ok(permit)
    }

    /// Wait for a task to stop; `Ok` only for exit status `OK` (or `WARNINGS`). Once the run is
    /// interrupted, the task gets [`super::interrupt::IN_FLIGHT_GRACE`] more to finish; after
    /// that the run stops and leaves it to Proxmox (the next run waits for it or re-reads it).
    pub(super) async fn wait_task(&self, node: &str, upid: &Upid) -> anyhow::Result<()> {
        let Some(interrupt) = &self.options.interrupt else {
            return Ok(self.wait_task_to_end(node, upid).await?);
        };
        let grace = async {
            interrupt.fired().await;
            tokio::time::sleep(super::interrupt::IN_FLIGHT_GRACE).await;
        };
        tokio::select! {
            waited = self.wait_task_to_end(node, upid) => Ok(waited?),
            () = grace => {
                self.events.event(ExecEvent::Note {
                    message: format!(
                        "task {upid} still runs on Proxmox after {}s; the next run waits for it",
                        super::interrupt::IN_FLIGHT_GRACE.as_secs()
                    ),
                });
                Err(interrupt.interrupted().into())
            }
        }
    }

    /// The wait itself goes through the node's poller, which asks about all the tasks waited on
    /// there at once.
    async fn wait_task_to_end(&self, node: &str, upid: &Upid) -> Result<(), PveError> {
        let node_name = NodeName(upid.node().unwrap_or(node).to_owned());
        let poller = self.poller(&node_name);
        poller
            .wait(self.api.as_ref(), upid, self.options.task_timeout, 20)
            .await?;
        Ok(())
    }

    /// How long something that takes `typical` on an idle node should take on `node`, from the
    /// speed its tasks showed so far (`None` before one ended).
    pub(super) fn expected_on(&self, node: &NodeName, typical: Duration) -> Option<Duration> {
        self.poller(node).expected(typical)
    }

    /// The volumes of `storage` as this run knows them from `node`.
    pub(super) fn known_volumes(&self, node: &NodeName, storage: &str) -> Arc<KnownVolumes> {
        let mut isos = match self.isos.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(isos.entry((node.clone(), storage.to_owned())).or_default())
    }

    fn poller(&self, node: &NodeName) -> crate::pve::NodeTaskPoller {
        let mut pollers = match self.pollers.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        pollers
            .entry(node.clone())
            .or_insert_with(|| {
                let options = crate::pve::PollOptions {
                    initial_interval: self.options.poll(Duration::from_millis(20)),
                    // The poller's looks are a fraction of a task's run time; the cap only
                    // bounds a look at a long task (a download of minutes).
                    max_interval: self.options.poll(Duration::from_secs(5)),
                    list_limit: 1000,
                    // No node does its tasks twenty times faster than typical (a download of
                    // 20 s is first looked at after 1 s, a create after 0.4 s).
                    fastest: 0.05 * self.options.poll_scale.clamp(0.0, 1.0),
                };
                crate::pve::NodeTaskPoller::spawn(Arc::clone(&self.api), node.clone(), options)
            })
            .clone()
    }

    /// How long a guest on `node` takes from its start task's end to its agent's answer: the
    /// shortest wait seen on the node, else a typical 15 s at the speed its tasks showed.
    pub(super) fn expected_boot(&self, node: &NodeName) -> Option<Duration> {
        let seen = match self.boots.lock() {
            Ok(guard) => guard.get(node).copied(),
            Err(poisoned) => poisoned.into_inner().get(node).copied(),
        };
        let typical = self.expected_on(node, Duration::from_secs(15));
        match (seen, typical) {
            (Some(seen), Some(typical)) => Some(seen.min(typical)),
            (seen, typical) => seen.or(typical),
        }
    }

    /// A guest on `node` answered `waited` after its start task was seen to end.
    pub(super) fn booted(&self, node: &NodeName, waited: Duration) {
        let mut boots = match self.boots.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let shortest = boots.entry(node.clone()).or_insert(waited);
        *shortest = (*shortest).min(waited);
    }

    /// Which node a VMID lives on now (cluster-wide), if it exists.
    pub(super) async fn locate(&self, vmid: VmId) -> Result<Option<NodeName>, PveError> {
        Ok(self
            .api
            .cluster_resources(Some("vm"))
            .await?
            .into_iter()
            .find(|r| r.vmid == Some(vmid.0))
            .and_then(|r| r.node.map(NodeName)))
    }

    pub(super) fn mark_gone(&self, vm: &str) {
        if let Some(gone) = self.gone.get(vm) {
            gone.send_replace(true);
        }
    }

    /// Wait until the VMs in `after` are gone (they free what `vm` is planned to use).
    pub(super) async fn wait_gone(&self, vm: &str, after: &[String]) -> anyhow::Result<()> {
        for other in after {
            let Some(gone) = self.gone.get(other) else {
                continue;
            };
            if !*gone.borrow() {
                self.step(vm, "wait");
            }
            let mut gone = gone.subscribe();
            self.until_interrupted(gone.wait_for(|done| *done))
                .await?
                .map_err(|_| anyhow!("{other} was not removed, so {vm} cannot take its place"))?;
        }
        Ok(())
    }
}

pub(super) fn record_for(vm: &PlannedVm, phase: VmPhase) -> VmRecord {
    VmRecord {
        name: vm.name.clone(),
        vmid: vm.vmid.0,
        node: vm.node.0.clone(),
        group: vm.group.clone(),
        role: vm.role,
        phase,
        params_hash: params_hash(&vm.params),
        address: Some(vm.address.to_string()),
        gpus: vm.gpus.clone(),
        iso: vm.iso.as_ref().map(|iso| iso.volid.clone()),
    }
}
