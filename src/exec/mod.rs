//! Runs a Plan: a DAG of idempotent steps, bounded parallelism, retries decided by error kind, events to the reporter.
//!
//! Per VM the chain is image (once per node/storage, shared) → ISO upload → intent (state) →
//! create → resize → start → guest agent + address → seed cleanup → ready (state). Every step
//! first reads what Proxmox has and acts only when needed, so any step may be re-run after a
//! failure or a crash; a converged cluster makes zero mutating calls.

pub mod cluster;
pub mod doctor;
pub mod phase2;
pub mod progress;
pub mod retry;
pub mod session;
pub mod simulate;
pub mod testbed_guests;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use tokio::sync::{Mutex, OnceCell, Semaphore};

use crate::inventory::cluster_tag;
use crate::plan::{
    Action, ActionKind, ImageDownload, ImageSource, Plan, PlannedVm, disk_size_gib, params_hash,
};
use crate::profile::model::Role;
use crate::pve::types::{PciMapping, UploadContent};
use crate::pve::{NodeName, Params, PveApi, PveError, Upid, VmId, VolumeId};
use crate::state::{StateStore, VmPhase, VmRecord, VolumeRecord};

pub use progress::{CollectProgress, ExecEvent, NoProgress, ProgressSink};
use retry::{Decision, decide, is_already_exists};

/// Knobs of one run.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Concurrent mutating steps per Proxmox node.
    pub per_node: usize,
    /// Concurrent disk allocations (create/clone) per storage.
    pub per_storage: usize,
    /// Attempts per step before giving up.
    pub max_attempts: u32,
    pub backoff: Duration,
    /// Bound on any one Proxmox task.
    pub task_timeout: Duration,
    /// Bound on the guest agent answering with the planned address.
    pub guest_timeout: Duration,
    /// Hard-stop timeout (seconds) passed to Proxmox.
    pub stop_timeout_secs: u32,
    /// Test hook: fail (as a crash would) at the N-th step boundary (0-based).
    pub fail_after_step: Option<usize>,
    /// Multiplies the task and guest-agent polling intervals: the simulator's time scale under
    /// `--simulate`, so polling overshoot stays proportionate to the (scaled) task durations.
    pub poll_scale: f64,
}

impl ExecOptions {
    /// `base` scaled by [`ExecOptions::poll_scale`], at least 2 ms.
    fn poll(&self, base: Duration) -> Duration {
        base.mul_f64(self.poll_scale.clamp(0.0, 1.0))
            .max(Duration::from_millis(2))
    }
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            per_node: 8,
            per_storage: 4,
            max_attempts: 8,
            backoff: Duration::from_millis(200),
            task_timeout: Duration::from_secs(30 * 60),
            guest_timeout: Duration::from_secs(10 * 60),
            stop_timeout_secs: 30,
            fail_after_step: None,
            poll_scale: 1.0,
        }
    }
}

/// Provides the NoCloud seed ISO bytes of a VM (built by `cloudinit`; tests may fake it).
pub trait SeedSource: Send + Sync {
    fn iso(&self, vm: &PlannedVm) -> anyhow::Result<Vec<u8>>;
}

/// A VM that phase 2 can take over.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProvisionedVm {
    pub name: String,
    pub vmid: u32,
    pub node: String,
    pub address: IpAddr,
    pub role: Role,
    pub group: String,
    /// Whole PCI devices passed through.
    pub gpus: Vec<String>,
    /// Time this run spent on the VM (0 when it was already converged).
    pub seconds: f64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub vms: Vec<ProvisionedVm>,
    pub destroyed: Vec<String>,
    /// Requests that change Proxmox (POST/PUT/DELETE).
    pub mutating_calls: usize,
    pub seconds: f64,
}

/// The marker error of [`ExecOptions::fail_after_step`].
#[derive(Debug, thiserror::Error)]
#[error("injected failure at step boundary {0}")]
pub struct InjectedCrash(pub usize);

struct Runner {
    api: Arc<dyn PveApi>,
    store: Mutex<StateStore>,
    seeds: Arc<dyn SeedSource>,
    events: Arc<dyn ProgressSink>,
    options: ExecOptions,
    cluster: String,
    node_slots: BTreeMap<String, Arc<Semaphore>>,
    /// Per storage: shared storages by name, node-local ones by (node, storage).
    storage_slots: Mutex<BTreeMap<(String, String), Arc<Semaphore>>>,
    shared_storages: std::collections::BTreeSet<String>,
    images: BTreeMap<(String, String), (ImageDownload, OnceCell<()>)>,
    /// Download target per VM node (shared storages download once on one node).
    image_for_node: BTreeMap<String, (String, String)>,
    mutating: AtomicUsize,
    boundaries: AtomicUsize,
    /// Per VM that goes away (destroy or the destroy half of a replace): set once it is gone,
    /// for the creates that wait on it ([`crate::plan::Action::after`]).
    gone: BTreeMap<String, tokio::sync::watch::Sender<bool>>,
}

/// Execute `plan`. The state store stays locked by the caller for the whole run.
pub async fn apply(
    api: Arc<dyn PveApi>,
    plan: &Plan,
    store: StateStore,
    seeds: Arc<dyn SeedSource>,
    events: Arc<dyn ProgressSink>,
    options: ExecOptions,
) -> anyhow::Result<(ApplyReport, StateStore)> {
    let started = Instant::now();
    let node_slots = plan
        .vms
        .iter()
        .map(|vm| vm.node.clone())
        .chain(plan.actions.iter().map(|a| a.node.clone()))
        .map(|node| (node, Arc::new(Semaphore::new(options.per_node.max(1)))))
        .collect();
    let mut images = BTreeMap::new();
    let mut image_for_node = BTreeMap::new();
    for download in &plan.downloads {
        images.insert(
            (download.node.clone(), download.storage.clone()),
            (download.clone(), OnceCell::new()),
        );
    }
    for vm in &plan.vms {
        if let Some(download) = plan
            .downloads
            .iter()
            .find(|d| d.node == vm.node)
            .or_else(|| plan.downloads.first().filter(|_| plan.downloads.len() == 1))
        {
            image_for_node.insert(
                vm.node.clone(),
                (download.node.clone(), download.storage.clone()),
            );
        }
    }
    let runner = Arc::new(Runner {
        api,
        store: Mutex::new(store),
        seeds,
        events,
        options,
        cluster: plan.cluster.clone(),
        node_slots,
        storage_slots: Mutex::new(BTreeMap::new()),
        shared_storages: plan.shared_storages.clone(),
        images,
        image_for_node,
        mutating: AtomicUsize::new(0),
        boundaries: AtomicUsize::new(0),
        gone: plan
            .actions
            .iter()
            .filter(|a| matches!(a.action, ActionKind::Destroy | ActionKind::Replace))
            .map(|a| (a.vm.clone(), tokio::sync::watch::Sender::new(false)))
            .collect(),
    });
    {
        let mut store = runner.store.lock().await;
        store.update(|state| {
            if state.cluster.is_empty() {
                state.cluster = plan.cluster.clone();
            }
        })?;
    }
    let worked: Vec<String> = plan.actions.iter().map(|a| a.vm.clone()).collect();
    runner.events.event(ExecEvent::Started { vms: worked });

    // Converged VMs found on Proxmox but not in the state are recorded (no API call).
    runner.record_converged(plan).await?;
    runner.global_steps(plan).await?;

    let mut tasks = tokio::task::JoinSet::new();
    for action in plan.actions.iter().cloned() {
        let runner = Arc::clone(&runner);
        let planned = plan.vm(&action.vm).cloned();
        tasks.spawn(async move {
            let started = Instant::now();
            let result = runner.run_action(&action, planned.as_ref()).await;
            (action, result, started.elapsed())
        });
    }
    let mut durations = BTreeMap::new();
    let mut destroyed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined
            .context("a VM task panicked")
            .and_then(|(action, result, elapsed)| {
                result
                    .with_context(|| format!("{} {}", action.action.symbol(), action.vm))
                    .map(|()| (action, elapsed))
            });
        // The first failure ends the run: everything done so far is in the state, and a re-run
        // continues from there. The other tasks are cancelled and awaited before returning, so
        // no task still holds the state (and its lock) when the caller sees the error.
        let (action, elapsed) = match outcome {
            Ok(done) => done,
            Err(error) => {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                return Err(error);
            }
        };
        runner.events.event(ExecEvent::VmDone {
            vm: action.vm.clone(),
            elapsed,
        });
        if action.action == ActionKind::Destroy {
            destroyed.push(action.vm.clone());
        }
        durations.insert(action.vm.clone(), elapsed.as_secs_f64());
    }
    let vms = plan
        .vms
        .iter()
        .map(|vm| ProvisionedVm {
            name: vm.name.clone(),
            vmid: vm.vmid,
            node: vm.node.clone(),
            address: vm.address,
            role: vm.role,
            group: vm.group.clone(),
            gpus: vm.gpus.clone(),
            seconds: durations.get(&vm.name).copied().unwrap_or(0.0),
        })
        .collect();
    let report = ApplyReport {
        vms,
        destroyed,
        mutating_calls: runner.mutating.load(Ordering::SeqCst),
        seconds: started.elapsed().as_secs_f64(),
    };
    let runner =
        Arc::try_unwrap(runner).map_err(|_| anyhow!("internal: VM tasks still hold the runner"))?;
    Ok((report, runner.store.into_inner()))
}

impl Runner {
    /// A step boundary: where a crash may happen (test hook).
    fn boundary(&self) -> anyhow::Result<()> {
        let index = self.boundaries.fetch_add(1, Ordering::SeqCst);
        match self.options.fail_after_step {
            Some(limit) if index >= limit => Err(InjectedCrash(index).into()),
            Some(_) | None => Ok(()),
        }
    }

    fn mutated(&self) {
        self.mutating.fetch_add(1, Ordering::SeqCst);
    }

    fn step(&self, vm: &str, step: &'static str) {
        self.events.event(ExecEvent::Step {
            vm: vm.to_owned(),
            step,
        });
    }

    /// Run `attempt` until it succeeds, retrying by error kind.
    async fn retrying<T, F, Fut>(
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

    async fn node_slot(&self, node: &str) -> anyhow::Result<tokio::sync::OwnedSemaphorePermit> {
        let semaphore = self
            .node_slots
            .get(node)
            .cloned()
            .unwrap_or_else(|| Arc::new(Semaphore::new(1)));
        Ok(semaphore.acquire_owned().await?)
    }

    /// A disk-allocation slot on `storage` as seen from `node`: a node-local storage (lvmthin,
    /// dir, ZFS) is a separate disk on every node, a shared one is one for the cluster.
    async fn storage_slot(
        &self,
        node: &str,
        storage: &str,
    ) -> anyhow::Result<tokio::sync::OwnedSemaphorePermit> {
        let owner = if self.shared_storages.contains(storage) {
            String::new()
        } else {
            node.to_owned()
        };
        let semaphore = {
            let mut slots = self.storage_slots.lock().await;
            Arc::clone(
                slots
                    .entry((owner, storage.to_owned()))
                    .or_insert_with(|| Arc::new(Semaphore::new(self.options.per_storage.max(1)))),
            )
        };
        Ok(semaphore.acquire_owned().await?)
    }

    /// Wait for a task to stop; `Ok` only for exit status `OK` (or `WARNINGS`).
    async fn wait_task(&self, node: &str, upid: &Upid) -> Result<(), PveError> {
        let node_name = NodeName(upid.node().unwrap_or(node).to_owned());
        let wait = crate::pve::WaitOptions {
            timeout: self.options.task_timeout,
            initial_interval: self.options.poll(Duration::from_millis(20)),
            max_interval: self.options.poll(Duration::from_millis(500)),
            growth: 1.5,
            poll_scale: 1.0,
            log_lines: 20,
        };
        crate::pve::wait_for_task_on(self.api.as_ref(), &node_name, upid, &wait, &|_| {}).await?;
        Ok(())
    }

    async fn record_converged(&self, plan: &Plan) -> anyhow::Result<()> {
        let converged: Vec<&PlannedVm> = plan.vms.iter().filter(|vm| vm.converged).collect();
        let mut store = self.store.lock().await;
        store.update(|state| {
            for vm in converged {
                let record = state
                    .vms
                    .entry(vm.name.clone())
                    .or_insert_with(|| record_for(vm, VmPhase::Ready));
                if record.phase != VmPhase::Ready || record.vmid != vm.vmid {
                    *record = record_for(vm, VmPhase::Ready);
                }
            }
        })?;
        Ok(())
    }

    /// Pool, PCI mappings: before any VM needs them.
    async fn global_steps(&self, plan: &Plan) -> anyhow::Result<()> {
        if let Some(pool) = &plan.pool {
            self.events.event(ExecEvent::Global {
                what: format!("pool {pool}"),
            });
            self.retrying("cluster", "pool", || async {
                if self.api.pools().await?.iter().any(|p| &p.poolid == pool) {
                    return Ok(());
                }
                self.mutated();
                self.api
                    .pool_create(pool, Some("provision-managed VMs"))
                    .await?;
                Ok(())
            })
            .await?;
        }
        for mapping in &plan.mappings {
            self.events.event(ExecEvent::Global {
                what: format!("pci mapping {}", mapping.id),
            });
            self.ensure_mapping(mapping).await?;
            self.boundary()?;
        }
        Ok(())
    }

    async fn ensure_mapping(&self, mapping: &PciMapping) -> anyhow::Result<()> {
        self.retrying("cluster", "mapping", || async {
            if !self
                .api
                .pci_mappings()
                .await?
                .iter()
                .any(|m| m.id == mapping.id)
            {
                self.mutated();
                match self.api.pci_mapping_create(mapping).await {
                    Ok(()) => {}
                    Err(error) if is_already_exists(&error) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            Ok(())
        })
        .await?;
        let mut store = self.store.lock().await;
        store.update(|state| {
            if !state.mappings.contains(&mapping.id) {
                state.mappings.push(mapping.id.clone());
            }
        })?;
        Ok(())
    }

    /// The cloud image for `node`, downloaded at most once (concurrent callers wait).
    async fn ensure_image(&self, vm: &str, node: &str) -> anyhow::Result<()> {
        let Some(key) = self.image_for_node.get(node) else {
            return Ok(());
        };
        let Some((download, cell)) = self.images.get(key) else {
            return Ok(());
        };
        self.step(vm, "image");
        cell.get_or_try_init(|| async {
            self.events.event(ExecEvent::Global {
                what: format!("download {} on {}", download.volid, download.node),
            });
            self.retrying(&download.node, "image", || self.download(download))
                .await?;
            let mut store = self.store.lock().await;
            store.update(|state| {
                let record = VolumeRecord {
                    node: download.node.clone(),
                    volid: download.volid.clone(),
                };
                if !state.images.contains(&record) {
                    state.images.push(record);
                }
            })?;
            Ok::<_, anyhow::Error>(())
        })
        .await?;
        Ok(())
    }

    async fn download(&self, download: &ImageDownload) -> anyhow::Result<()> {
        let node = NodeName(download.node.clone());
        let present = self
            .api
            .storage_content(&node, &download.storage, Some("import"))
            .await?
            .iter()
            .any(|volume| volume.volid == download.volid);
        if present {
            return Ok(());
        }
        let _slot = self.node_slot(&download.node).await?;
        self.mutated();
        let upid = self
            .api
            .download_url(&node, &download.storage, &download.params)
            .await?;
        self.wait_task(&download.node, &upid).await?;
        Ok(())
    }

    async fn run_action(&self, action: &Action, planned: Option<&PlannedVm>) -> anyhow::Result<()> {
        match (action.action, planned) {
            (ActionKind::Destroy, _) => {
                self.destroy(&action.vm, &action.node, action.vmid).await?;
                self.mark_gone(&action.vm);
                Ok(())
            }
            (ActionKind::Create, Some(vm)) => self.create_chain(vm, &action.after).await,
            (ActionKind::Replace, Some(vm)) => {
                // The old VM may live on another node than the new placement.
                let old_node = self
                    .locate(action.vmid)
                    .await?
                    .unwrap_or_else(|| vm.node.clone());
                self.destroy_vm_only(&vm.name, &old_node, action.vmid)
                    .await?;
                self.mark_gone(&vm.name);
                self.boundary()?;
                self.create_chain(vm, &action.after).await
            }
            (ActionKind::Update, Some(vm)) => self.update_chain(action, vm).await,
            (ActionKind::Create | ActionKind::Replace | ActionKind::Update, None) => {
                bail!("internal: no planned VM for {}", action.vm)
            }
        }
    }

    /// Which node a VMID lives on now (cluster-wide), if it exists.
    async fn locate(&self, vmid: u32) -> Result<Option<String>, PveError> {
        Ok(self
            .api
            .cluster_resources(Some("vm"))
            .await?
            .into_iter()
            .find(|r| r.vmid == Some(vmid))
            .and_then(|r| r.node))
    }

    fn mark_gone(&self, vm: &str) {
        if let Some(gone) = self.gone.get(vm) {
            gone.send_replace(true);
        }
    }

    /// Wait until the VMs in `after` are gone (they free what `vm` is planned to use).
    async fn wait_gone(&self, vm: &str, after: &[String]) -> anyhow::Result<()> {
        for other in after {
            let Some(gone) = self.gone.get(other) else {
                continue;
            };
            if !*gone.borrow() {
                self.step(vm, "wait");
            }
            gone.subscribe()
                .wait_for(|done| *done)
                .await
                .map_err(|_| anyhow!("{other} was not removed, so {vm} cannot take its place"))?;
        }
        Ok(())
    }

    async fn create_chain(&self, vm: &PlannedVm, after: &[String]) -> anyhow::Result<()> {
        self.ensure_image(&vm.name, &vm.node).await?;
        self.boundary()?;
        self.ensure_iso(vm).await?;
        self.boundary()?;
        self.wait_gone(&vm.name, after).await?;
        // Intent before create: a crash from here on leaves a record naming the VMID.
        {
            let mut store = self.store.lock().await;
            store.update(|state| {
                let record = state
                    .vms
                    .entry(vm.name.clone())
                    .or_insert_with(|| record_for(vm, VmPhase::Intent));
                if record.vmid != vm.vmid || record.phase == VmPhase::Ready {
                    *record = record_for(vm, VmPhase::Intent);
                }
                record.node = vm.node.clone();
                record.params_hash = params_hash(&vm.params);
                record.iso = vm.iso.as_ref().map(|iso| iso.volid.clone());
            })?;
        }
        self.boundary()?;
        self.step(&vm.name, "create");
        self.retrying(&vm.name, "create", || self.create(vm))
            .await?;
        {
            let mut store = self.store.lock().await;
            store.update(|state| {
                if let Some(record) = state.vms.get_mut(&vm.name) {
                    record.phase = VmPhase::Created;
                }
            })?;
        }
        self.boundary()?;
        self.finish_chain(vm).await
    }

    /// Resize → start → guest → seed cleanup → ready.
    async fn finish_chain(&self, vm: &PlannedVm) -> anyhow::Result<()> {
        self.step(&vm.name, "resize");
        self.retrying(&vm.name, "resize", || self.resize(vm))
            .await?;
        self.boundary()?;
        self.step(&vm.name, "start");
        self.retrying(&vm.name, "start", || self.start(vm)).await?;
        self.boundary()?;
        self.step(&vm.name, "guest");
        self.wait_guest(vm).await?;
        self.boundary()?;
        self.step(&vm.name, "seed cleanup");
        self.retrying(&vm.name, "seed cleanup", || self.cleanup_seed(vm))
            .await?;
        let mut store = self.store.lock().await;
        store.update(|state| {
            let record = state
                .vms
                .entry(vm.name.clone())
                .or_insert_with(|| record_for(vm, VmPhase::Ready));
            record.phase = VmPhase::Ready;
            record.address = Some(vm.address.to_string());
            record.gpus = vm.gpus.clone();
            record.node = vm.node.clone();
        })?;
        Ok(())
    }

    async fn ensure_iso(&self, vm: &PlannedVm) -> anyhow::Result<()> {
        let Some(iso) = &vm.iso else {
            return Ok(());
        };
        self.step(&vm.name, "iso");
        let bytes = self
            .seeds
            .iso(vm)
            .with_context(|| format!("building the cloud-init seed of {}", vm.name))?;
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        self.retrying(&vm.name, "iso", || async {
            let node = NodeName(vm.node.clone());
            let present = self
                .api
                .storage_content(&node, &iso.storage, Some("iso"))
                .await?
                .iter()
                .any(|volume| volume.volid == iso.volid);
            if present {
                return Ok(());
            }
            let _slot = self.node_slot(&vm.node).await?;
            self.mutated();
            let upid = self
                .api
                .upload(
                    &node,
                    &iso.storage,
                    UploadContent::Iso,
                    &iso.file_name,
                    bytes.clone(),
                    &sha256,
                )
                .await?;
            self.wait_task(&vm.node, &upid).await?;
            Ok(())
        })
        .await
    }

    /// Create the VM unless it exists; an existing VMID that is not ours is an error.
    async fn create(&self, vm: &PlannedVm) -> anyhow::Result<()> {
        let node = NodeName(vm.node.clone());
        let vmid = VmId(vm.vmid);
        let tag = cluster_tag(&self.cluster);
        if let Some(existing) = self
            .api
            .cluster_resources(Some("vm"))
            .await?
            .into_iter()
            .find(|r| r.vmid == Some(vm.vmid))
        {
            let ours = existing.name.as_deref() == Some(vm.name.as_str())
                && existing.tag_list().contains(&tag.as_str());
            if !ours {
                bail!(
                    "VMID {} is taken by `{}` on {} (not this cluster's); re-run `provision plan` to pick another id",
                    vm.vmid,
                    existing.name.unwrap_or_default(),
                    existing.node.unwrap_or_default()
                );
            }
            if existing.lock.as_deref() == Some("create") {
                // A create from an interrupted run is still running: wait for it to end.
                return Err(PveError::LockTimeout {
                    path: format!("/nodes/{}/qemu/{}", vm.node, vm.vmid),
                    message: "VM is still being created".to_owned(),
                }
                .into());
            }
            return Ok(());
        }
        let storage =
            crate::plan::disk_storage(vm.params.get("scsi0").map_or("", String::as_str)).to_owned();
        // Storage first: a create queued for its disk must not hold one of the node's slots,
        // which the resizes and starts of the VMs already created need.
        let _storage_slot = self.storage_slot(&vm.node, &storage).await?;
        let _node_slot = self.node_slot(&vm.node).await?;
        match &vm.image {
            ImageSource::Import { .. } => {
                self.mutated();
                let upid = self.api.vm_create(&node, &vm.params).await?;
                self.wait_task(&vm.node, &upid).await?;
            }
            ImageSource::Clone {
                template,
                template_node,
            } => {
                let mut clone = Params::new();
                clone.insert("newid".into(), vm.vmid.to_string());
                clone.insert("name".into(), vm.name.clone());
                clone.insert("full".into(), "1".into());
                clone.insert("target".into(), vm.node.clone());
                clone.insert("storage".into(), storage.clone());
                self.mutated();
                let upid = self
                    .api
                    .vm_clone(&NodeName(template_node.clone()), VmId(*template), &clone)
                    .await?;
                self.wait_task(template_node, &upid).await?;
                let mut config = vm.params.clone();
                config.remove("vmid");
                config.remove("pool");
                self.mutated();
                let upid = self.api.vm_config_post(&node, vmid, &config).await?;
                self.wait_task(&vm.node, &upid).await?;
            }
        }
        Ok(())
    }

    async fn resize(&self, vm: &PlannedVm) -> anyhow::Result<()> {
        let node = NodeName(vm.node.clone());
        let config = self.api.vm_config(&node, VmId(vm.vmid)).await?;
        for resize in &vm.resize {
            let want: u64 = resize.size.trim_end_matches('G').parse().unwrap_or(0);
            let have = config
                .get(&resize.disk)
                .and_then(|value| disk_size_gib(value));
            if have.is_some_and(|have| have >= want) {
                continue;
            }
            if have.is_none() && !config.contains_key(&resize.disk) {
                bail!(
                    "{} of {} is missing after create; `provision up` will replace the VM",
                    resize.disk,
                    vm.name
                );
            }
            let _slot = self.node_slot(&vm.node).await?;
            self.mutated();
            let upid = self
                .api
                .vm_resize(&node, VmId(vm.vmid), &resize.disk, &resize.size)
                .await?;
            self.wait_task(&vm.node, &upid).await?;
        }
        Ok(())
    }

    async fn start(&self, vm: &PlannedVm) -> anyhow::Result<()> {
        let node = NodeName(vm.node.clone());
        let status = self.api.vm_status(&node, VmId(vm.vmid)).await?;
        if status.status == "running" {
            return Ok(());
        }
        let _slot = self.node_slot(&vm.node).await?;
        self.mutated();
        let upid = self.api.vm_start(&node, VmId(vm.vmid)).await?;
        self.wait_task(&vm.node, &upid).await?;
        Ok(())
    }

    /// Bounded wait: the guest agent answers and reports the planned address.
    async fn wait_guest(&self, vm: &PlannedVm) -> anyhow::Result<()> {
        use crate::pve::wait::{
            Check, PollInterval, WaitError, agent_error_is_final, agent_reports_address,
            await_condition,
        };
        let node = NodeName(vm.node.clone());
        let vmid = VmId(vm.vmid);
        let wanted = vm.address.to_string();
        // The agent answers some 15 s after boot on real hardware; 1 s keeps the overshoot
        // small without flooding pveproxy.
        let interval = PollInterval::growing(
            self.options.poll(Duration::from_millis(50)),
            self.options.poll(Duration::from_secs(1)),
            1.5,
        );
        let what = format!("the guest agent of {} to report {wanted}", vm.name);
        let waited = await_condition(&what, self.options.guest_timeout, interval, || async {
            match self.api.agent_ping(&node, vmid).await {
                Ok(()) => match self.api.agent_network_interfaces(&node, vmid).await {
                    Ok(interfaces) => Ok(agent_reports_address(&interfaces, &wanted)),
                    Err(error) => Ok(Check::Pending(error.to_string())),
                },
                Err(error) if agent_error_is_final(&error) => Err(error),
                Err(error) => Ok(Check::Pending(error.to_string())),
            }
        })
        .await;
        match waited {
            Ok(()) => Ok(()),
            Err(WaitError::Failed(error)) => {
                Err(error).context(format!("guest agent of {}", vm.name))
            }
            Err(WaitError::TimedOut { timeout, last, .. }) => bail!(
                "{} (vmid {} on {}) did not report {} through the guest agent within {}s ({last}); check its console: `qm terminal {}` on {}",
                vm.name,
                vm.vmid,
                vm.node,
                wanted,
                timeout.as_secs(),
                vm.vmid,
                vm.node
            ),
        }
    }

    /// The seed ISO holds the VM's private SSH host key: after first boot it is ejected and
    /// deleted from Proxmox storage.
    async fn cleanup_seed(&self, vm: &PlannedVm) -> anyhow::Result<()> {
        let Some(iso) = &vm.iso else {
            return Ok(());
        };
        let node = NodeName(vm.node.clone());
        let config = self.api.vm_config(&node, VmId(vm.vmid)).await?;
        if config
            .get("ide2")
            .is_some_and(|value| value.starts_with(&iso.volid))
        {
            let mut eject = Params::new();
            eject.insert("ide2".into(), "none,media=cdrom".into());
            self.mutated();
            self.api.vm_config_put(&node, VmId(vm.vmid), &eject).await?;
        }
        self.delete_iso(&vm.node, &iso.storage, &iso.volid).await
    }

    async fn delete_iso(&self, node: &str, storage: &str, volid: &str) -> anyhow::Result<()> {
        let node_name = NodeName(node.to_owned());
        let present = self
            .api
            .storage_content(&node_name, storage, Some("iso"))
            .await?
            .iter()
            .any(|volume| volume.volid == volid);
        if !present {
            return Ok(());
        }
        self.mutated();
        match self
            .api
            .delete_volume(&node_name, &VolumeId(volid.to_owned()))
            .await
        {
            Ok(Some(upid)) => self.wait_task(node, &upid).await?,
            Ok(None) | Err(PveError::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }

    async fn update_chain(&self, action: &Action, vm: &PlannedVm) -> anyhow::Result<()> {
        {
            let mut store = self.store.lock().await;
            store.update(|state| {
                state
                    .vms
                    .entry(vm.name.clone())
                    .or_insert_with(|| record_for(vm, VmPhase::Created));
            })?;
        }
        let node = NodeName(vm.node.clone());
        let vmid = VmId(vm.vmid);
        if !action.params.is_empty() || !action.delete.is_empty() {
            self.step(&vm.name, "update");
            self.retrying(&vm.name, "update", || async {
                let live = self.api.vm_config(&node, vmid).await?;
                let mut changes = Params::new();
                for (key, value) in &action.params {
                    if !crate::plan::same_value(key, live.get(key).map(String::as_str), value) {
                        changes.insert(key.clone(), value.clone());
                    }
                }
                let delete: Vec<&String> = action
                    .delete
                    .iter()
                    .filter(|key| live.contains_key(*key))
                    .collect();
                if !delete.is_empty() {
                    changes.insert(
                        "delete".into(),
                        delete
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                }
                if changes.is_empty() {
                    return Ok(());
                }
                self.mutated();
                self.api.vm_config_put(&node, vmid, &changes).await?;
                Ok(())
            })
            .await?;
            self.boundary()?;
        }
        if action.restart {
            self.step(&vm.name, "restart");
            self.retrying(&vm.name, "restart", || async {
                let status = self.api.vm_status(&node, vmid).await?;
                if status.status != "running" {
                    return Ok(());
                }
                self.mutated();
                let upid = self
                    .api
                    .vm_shutdown(&node, vmid, self.options.stop_timeout_secs)
                    .await?;
                self.wait_task(&vm.node, &upid).await?;
                Ok(())
            })
            .await?;
            self.boundary()?;
        }
        self.finish_chain(vm).await
    }

    async fn destroy(&self, name: &str, node: &str, vmid: u32) -> anyhow::Result<()> {
        self.destroy_vm_only(name, node, vmid).await?;
        let iso = {
            let store = self.store.lock().await;
            store.state().vms.get(name).and_then(|r| r.iso.clone())
        };
        if let Some(volid) = iso {
            let storage = VolumeId(volid.clone()).storage().to_owned();
            self.retrying(name, "delete iso", || {
                self.delete_iso(node, &storage, &volid)
            })
            .await?;
        }
        let mut store = self.store.lock().await;
        store.update(|state| {
            state.vms.remove(name);
        })?;
        Ok(())
    }

    /// Hard stop (bounded) and purge; only a VM that still carries this cluster's tag.
    async fn destroy_vm_only(&self, name: &str, node: &str, vmid: u32) -> anyhow::Result<()> {
        self.step(name, "destroy");
        let tag = cluster_tag(&self.cluster);
        self.retrying(name, "destroy", || async {
            let Some(resource) = self
                .api
                .cluster_resources(Some("vm"))
                .await?
                .into_iter()
                .find(|r| r.vmid == Some(vmid))
            else {
                return Ok(());
            };
            if !resource.tag_list().contains(&tag.as_str()) {
                bail!(
                    "VM {vmid} on {} no longer carries tag {tag}; refusing to delete it",
                    resource.node.unwrap_or_default()
                );
            }
            let node = NodeName(resource.node.clone().unwrap_or_else(|| node.to_owned()));
            let _slot = self.node_slot(&node.0).await?;
            if resource.status.as_deref() == Some("running") {
                self.mutated();
                let upid = self
                    .api
                    .vm_stop(&node, VmId(vmid), Some(self.options.stop_timeout_secs))
                    .await?;
                self.wait_task(&node.0, &upid).await?;
            }
            self.mutated();
            let upid = self.api.vm_delete(&node, VmId(vmid)).await?;
            self.wait_task(&node.0, &upid).await?;
            Ok(())
        })
        .await
    }
}

fn record_for(vm: &PlannedVm, phase: VmPhase) -> VmRecord {
    VmRecord {
        name: vm.name.clone(),
        vmid: vm.vmid,
        node: vm.node.clone(),
        group: vm.group.clone(),
        role: vm.role,
        phase,
        params_hash: params_hash(&vm.params),
        address: Some(vm.address.to_string()),
        gpus: vm.gpus.clone(),
        iso: vm.iso.as_ref().map(|iso| iso.volid.clone()),
    }
}

/// What `down` did.
#[derive(Debug, Clone, Serialize)]
pub struct DestroyReport {
    pub destroyed: Vec<String>,
    /// In the state but gone from Proxmox (or no longer tagged): dropped from the state only.
    pub forgotten: Vec<String>,
    pub mutating_calls: usize,
    pub seconds: f64,
}

/// `provision down`: stop and purge every VM that is in the state AND carries the cluster tag,
/// delete the ISOs provision uploaded, empty the state.
pub async fn destroy_all(
    api: Arc<dyn PveApi>,
    cluster: &str,
    store: StateStore,
    events: Arc<dyn ProgressSink>,
    options: ExecOptions,
) -> anyhow::Result<(DestroyReport, StateStore)> {
    let started = Instant::now();
    let records: Vec<VmRecord> = store.state().vms.values().cloned().collect();
    let resources = api.cluster_resources(Some("vm")).await?;
    let tag = cluster_tag(cluster);
    let mut plan_actions = Vec::new();
    let mut forgotten = Vec::new();
    for record in &records {
        let live = resources.iter().find(|r| r.vmid == Some(record.vmid));
        match live {
            Some(resource)
                if resource.tag_list().contains(&tag.as_str())
                    && resource.name.as_deref() == Some(record.name.as_str()) =>
            {
                plan_actions.push(Action {
                    action: ActionKind::Destroy,
                    vm: record.name.clone(),
                    node: resource.node.clone().unwrap_or_else(|| record.node.clone()),
                    vmid: record.vmid,
                    params: Params::new(),
                    delete: Vec::new(),
                    resize: Vec::new(),
                    reason: None,
                    restart: false,
                    after: Vec::new(),
                });
            }
            Some(_) | None => forgotten.push(record.name.clone()),
        }
    }
    let plan = Plan {
        cluster: cluster.to_owned(),
        vms: Vec::new(),
        actions: plan_actions,
        downloads: Vec::new(),
        mappings: Vec::new(),
        pool: None,
        adopt: Vec::new(),
        warnings: Vec::new(),
        shared_storages: std::collections::BTreeSet::new(),
    };
    struct NoSeeds;
    impl SeedSource for NoSeeds {
        fn iso(&self, vm: &PlannedVm) -> anyhow::Result<Vec<u8>> {
            bail!("internal: no seed needed to destroy {}", vm.name)
        }
    }
    let (report, mut store) = apply(
        Arc::clone(&api),
        &plan,
        store,
        Arc::new(NoSeeds),
        events,
        options,
    )
    .await?;
    // Seeds of VMs that are gone (or not ours any more) are still ours to remove.
    let mut mutating = report.mutating_calls;
    for record in records.iter().filter(|r| forgotten.contains(&r.name)) {
        if let Some(volid) = &record.iso {
            let node = NodeName(record.node.clone());
            let volume = VolumeId(volid.clone());
            if api
                .storage_content(&node, volume.storage(), Some("iso"))
                .await
                .map(|content| content.iter().any(|v| &v.volid == volid))
                .unwrap_or(false)
            {
                mutating += 1;
                match api.delete_volume(&node, &volume).await {
                    Ok(_) | Err(PveError::NotFound { .. }) => {}
                    Err(error) => return Err(error).context(format!("deleting {volid}")),
                }
            }
        }
    }
    store.update(|state| {
        for name in &forgotten {
            state.vms.remove(name);
        }
    })?;
    Ok((
        DestroyReport {
            destroyed: report.destroyed,
            forgotten,
            mutating_calls: mutating,
            seconds: started.elapsed().as_secs_f64(),
        },
        store,
    ))
}
