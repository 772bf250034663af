//! `apply`: run a converge plan. Global steps (pool, PCI mappings) first, then per VM the
//! chain image (and template) alongside the ISO upload → intent (state) → create → resize →
//! start → guest agent → seed cleanup → ready, or an in-place update, or a destroy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{anyhow, bail};

use crate::plan::{Action, ActionKind, ImageDownload, ImageSource, Plan, PlannedVm, params_hash};
use crate::pve::Params;
use crate::pve::types::PciMapping;
use crate::state::{StateStore, VmPhase, VolumeRecord};

use super::retry::is_already_exists;
use super::rolling::{NoGate, RollingGate};
use super::runner::{Runner, record_for};
use super::vm::Known;
use super::{ApplyReport, ExecEvent, ExecOptions, ProgressSink, ProvisionedVm, SeedSource};

/// Execute `plan` with no cluster to drain ([`NoGate`]). The state store stays locked by the
/// caller for the whole run.
pub async fn apply(
    api: Arc<dyn crate::pve::PveApi>,
    plan: &Plan,
    store: StateStore,
    seeds: Arc<dyn SeedSource>,
    events: Arc<dyn ProgressSink>,
    options: ExecOptions,
) -> anyhow::Result<(ApplyReport, StateStore)> {
    apply_with_gate(api, plan, store, seeds, events, options, Arc::new(NoGate)).await
}

/// Execute `plan`, asking `gate` around every disruptive action of its waves.
pub async fn apply_with_gate(
    api: Arc<dyn crate::pve::PveApi>,
    plan: &Plan,
    store: StateStore,
    seeds: Arc<dyn SeedSource>,
    events: Arc<dyn ProgressSink>,
    options: ExecOptions,
    gate: Arc<dyn RollingGate>,
) -> anyhow::Result<(ApplyReport, StateStore)> {
    let started = Instant::now();
    let runner =
        Arc::new(Runner::new(api, plan, store, Some(seeds), events, options).with_gate(gate));
    {
        runner
            .record(|state| {
                if state.cluster.is_empty() {
                    state.cluster = plan.cluster.clone();
                }
            })
            .await?;
    }
    let worked: Vec<String> = plan.actions.iter().map(|a| a.vm().to_owned()).collect();
    runner.events.event(ExecEvent::Started { vms: worked });
    runner.events.event(ExecEvent::Planned {
        steps: runner.planned_steps(plan),
    });

    // Converged VMs found on Proxmox but not in the state are recorded (no API call).
    runner.record_converged(plan).await?;
    runner.global_steps(plan).await?;

    let done = runner.run_actions(plan).await?;
    let mut durations = BTreeMap::new();
    let mut destroyed = Vec::new();
    for finished in done {
        let name = finished.action.vm().to_owned();
        if finished.action.kind() == ActionKind::Destroy {
            destroyed.push(name.clone());
        }
        durations.insert(name, finished.elapsed.as_secs_f64());
    }
    let vms = plan
        .vms
        .iter()
        .map(|vm| ProvisionedVm {
            name: vm.name.clone(),
            vmid: vm.vmid.0,
            node: vm.node.0.clone(),
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
    pub(super) async fn record_converged(&self, plan: &Plan) -> anyhow::Result<()> {
        let converged: Vec<&PlannedVm> = plan.vms.iter().filter(|vm| vm.converged).collect();
        self.record(|state| {
            for vm in converged {
                let record = state
                    .vms
                    .entry(vm.name.clone())
                    .or_insert_with(|| record_for(vm, VmPhase::Ready));
                if record.phase != VmPhase::Ready || record.vmid != vm.vmid.0 {
                    *record = record_for(vm, VmPhase::Ready);
                }
            }
        })
        .await?;
        Ok(())
    }

    /// Pool, PCI mappings: before any VM needs them.
    pub(super) async fn global_steps(&self, plan: &Plan) -> anyhow::Result<()> {
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
        // One listing for all of them; a mapping whose create failed is looked up again.
        let existing: Vec<String> = if plan.mappings.is_empty() {
            Vec::new()
        } else {
            self.retrying("cluster", "mapping", || async {
                Ok(self.api.pci_mappings().await?)
            })
            .await?
            .into_iter()
            .map(|m| m.id)
            .collect()
        };
        for mapping in &plan.mappings {
            self.events.event(ExecEvent::Global {
                what: format!("pci mapping {}", mapping.id),
            });
            self.ensure_mapping(mapping, existing.contains(&mapping.id))
                .await?;
            self.boundary()?;
        }
        Ok(())
    }

    /// `listed`: the run's listing showed it (a retry lists again).
    pub(super) async fn ensure_mapping(
        &self,
        mapping: &PciMapping,
        listed: bool,
    ) -> anyhow::Result<()> {
        let first = AtomicBool::new(true);
        self.retrying("cluster", "mapping", || async {
            let exists = if first.swap(false, Ordering::SeqCst) {
                listed
            } else {
                self.api
                    .pci_mappings()
                    .await?
                    .iter()
                    .any(|m| m.id == mapping.id)
            };
            if !exists {
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
        self.record(|state| {
            if !state.mappings.contains(&mapping.id) {
                state.mappings.push(mapping.id.clone());
            }
        })
        .await?;
        Ok(())
    }

    /// The cloud image the plan gives `vm`, downloaded at most once (concurrent callers wait).
    pub(super) async fn ensure_image(&self, vm: &PlannedVm) -> anyhow::Result<()> {
        let Some((download, cell)) = vm
            .image_download
            .as_ref()
            .and_then(|key| self.images.get(key))
        else {
            return Ok(());
        };
        self.step(&vm.name, "image");
        cell.get_or_try_init(|| async {
            self.events.event(ExecEvent::Global {
                what: format!("download {} on {}", download.volid, download.node),
            });
            let first = AtomicBool::new(true);
            self.retrying(&download.node.0, "image", || {
                self.download(download, !first.swap(false, Ordering::SeqCst))
            })
            .await?;
            self.record(|state| {
                let record = VolumeRecord {
                    node: download.node.0.clone(),
                    volid: download.volid.clone(),
                };
                if !state.images.contains(&record) {
                    state.images.push(record);
                }
            })
            .await?;
            Ok::<_, anyhow::Error>(())
        })
        .await?;
        Ok(())
    }

    /// `reread`: list the storage again (a retry), else this run's one listing of it.
    pub(super) async fn download(
        &self,
        download: &ImageDownload,
        reread: bool,
    ) -> anyhow::Result<()> {
        let node = download.node.clone();
        // The slot before anything that waits: every VM of the node waits for this download,
        // so it goes before their ISO uploads.
        let _slot = self.node_slot(&download.node).await?;
        if self
            .volume_present(&node, &download.storage, &download.volid, reread)
            .await?
        {
            return Ok(());
        }
        self.mutated();
        let upid = self
            .api
            .download_url(&node, &download.storage, &download.params)
            .await?;
        // The wait ends the follow; the follow never ends by itself.
        let what = format!(
            "download {} on {}",
            download.volid.rsplit('/').next().unwrap_or(&download.volid),
            download.node.0
        );
        let shown = std::sync::Mutex::new(None);
        tokio::select! {
            waited = self.wait_task(&download.node.0, &upid) => waited?,
            () = self.follow_download(download, &upid, &what, &shown) => {}
        }
        // The last rows may have come after the last look: the whole file is there now.
        let shown = *shown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((total, tenth)) = shown
            && tenth < 10
        {
            self.events.event(ExecEvent::Transfer {
                what,
                done: total,
                total,
            });
        }
        self.volume_changed(&node, &download.storage, &download.volid, true)
            .await;
        Ok(())
    }

    /// Shows a download's bytes as its task log reports them (wget's rows), a tenth at a time;
    /// `shown` keeps the total and the last tenth shown.
    async fn follow_download(
        &self,
        download: &ImageDownload,
        upid: &crate::pve::Upid,
        what: &str,
        shown: &std::sync::Mutex<Option<(u64, u64)>>,
    ) {
        loop {
            tokio::time::sleep(self.options.poll(std::time::Duration::from_secs(4))).await;
            let Ok(lines) = self.api.task_log(&download.node, upid, 20).await else {
                continue;
            };
            let Some((done, total)) = crate::pve::task::download_progress(&lines) else {
                continue;
            };
            let tenth = done.saturating_mul(10) / total.max(1);
            let mut last = shown
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_none_or(|(_, shown)| shown != tenth) {
                *last = Some((total, tenth));
                drop(last);
                self.events.event(ExecEvent::Transfer {
                    what: what.to_owned(),
                    done,
                    total,
                });
            }
        }
    }

    pub(super) async fn run_action(
        &self,
        action: &Action,
        planned: Option<&PlannedVm>,
    ) -> anyhow::Result<()> {
        match (action, planned) {
            (Action::Destroy { target }, _) => {
                self.destroy(&target.name, &target.node, target.vmid)
                    .await?;
                self.mark_gone(&target.name);
                Ok(())
            }
            (Action::Create { after, .. }, Some(vm)) => self.create_chain(vm, after).await,
            (Action::Replace { target, after, .. }, Some(vm)) => {
                // The old VM may live on another node than the new placement.
                let old_node = self
                    .locate(target.vmid)
                    .await?
                    .unwrap_or_else(|| vm.node.clone());
                self.destroy_vm_only(&vm.name, &old_node, target.vmid)
                    .await?;
                self.mark_gone(&vm.name);
                self.boundary()?;
                self.create_chain(vm, after).await
            }
            (
                Action::Update {
                    changes,
                    delete,
                    restart,
                    ..
                },
                Some(vm),
            ) => self.update_chain(vm, changes, delete, *restart).await,
            (Action::Create { .. } | Action::Replace { .. } | Action::Update { .. }, None) => {
                bail!("internal: no planned VM for {}", action.vm())
            }
        }
    }
    pub(super) async fn create_chain(
        &self,
        vm: &PlannedVm,
        after: &[String],
    ) -> anyhow::Result<()> {
        // The seed ISO goes up while the node's image and template are made (its upload does
        // not depend on them; the download asks for its node slot first).
        let shared = async {
            self.ensure_image(vm).await?;
            self.boundary()?;
            if matches!(vm.image, ImageSource::Template { .. }) {
                self.ensure_template(vm).await?;
                self.boundary()?;
            }
            Ok::<_, anyhow::Error>(())
        };
        let (shared, iso) = tokio::join!(shared, self.ensure_iso(vm));
        shared?;
        iso?;
        self.boundary()?;
        self.wait_gone(&vm.name, after).await?;
        // Intent before create: a crash from here on leaves a record naming the VMID.
        {
            self.record(|state| {
                let record = state
                    .vms
                    .entry(vm.name.clone())
                    .or_insert_with(|| record_for(vm, VmPhase::Intent));
                if record.vmid != vm.vmid.0 || record.phase == VmPhase::Ready {
                    *record = record_for(vm, VmPhase::Intent);
                }
                record.node = vm.node.0.clone();
                record.params_hash = params_hash(&vm.params);
                record.iso = vm.iso.as_ref().map(|iso| iso.volid.clone());
            })
            .await?;
        }
        self.boundary()?;
        self.step(&vm.name, "create");
        // The plan saw the VMID free (a create, or a replace once the old VM is gone): the
        // first attempt sends the create without looking, a retry looks first.
        let planned_free = AtomicBool::new(true);
        let known = self
            .retrying(&vm.name, "create", || {
                self.create(vm, planned_free.swap(false, Ordering::SeqCst))
            })
            .await?;
        self.claim_address(vm).await?;
        {
            self.record(|state| {
                if let Some(record) = state.vms.get_mut(&vm.name) {
                    record.phase = VmPhase::Created;
                }
            })
            .await?;
        }
        self.boundary()?;
        self.finish_chain(vm, known).await
    }

    /// Resize → start → guest → seed cleanup → ready. What an earlier step of the chain
    /// learned (`known`) saves a read on each step's first attempt; a retry reads again.
    pub(super) async fn finish_chain(&self, vm: &PlannedVm, known: Known) -> anyhow::Result<()> {
        self.step(&vm.name, "resize");
        let mut config = known.config;
        let config = self
            .retrying(&vm.name, "resize", || self.resize(vm, config.take()))
            .await?;
        self.boundary()?;
        self.step(&vm.name, "start");
        let stopped = AtomicBool::new(known.stopped);
        self.retrying(&vm.name, "start", || {
            self.start(vm, stopped.swap(false, Ordering::SeqCst))
        })
        .await?;
        self.boundary()?;
        self.step(&vm.name, "guest");
        self.wait_guest(vm).await?;
        self.boundary()?;
        self.step(&vm.name, "seed cleanup");
        // Start and the guest's boot leave the CD-ROM as resize saw it.
        let mut config = Some(config);
        self.retrying(&vm.name, "seed cleanup", || {
            self.cleanup_seed(vm, config.take())
        })
        .await?;
        self.record(|state| {
            let record = state
                .vms
                .entry(vm.name.clone())
                .or_insert_with(|| record_for(vm, VmPhase::Ready));
            record.phase = VmPhase::Ready;
            record.address = Some(vm.address.to_string());
            record.gpus = vm.gpus.clone();
            record.node = vm.node.0.clone();
        })
        .await?;
        Ok(())
    }
    /// Apply the changed keys and deletions (each re-checked against the live config),
    /// restart when the plan says so, then finish the VM like a created one.
    pub(super) async fn update_chain(
        &self,
        vm: &PlannedVm,
        wanted: &Params,
        delete: &[String],
        restart: bool,
    ) -> anyhow::Result<()> {
        {
            self.record(|state| {
                state
                    .vms
                    .entry(vm.name.clone())
                    .or_insert_with(|| record_for(vm, VmPhase::Created));
            })
            .await?;
        }
        let node = vm.node.clone();
        let vmid = vm.vmid;
        if !wanted.is_empty() || !delete.is_empty() {
            self.step(&vm.name, "update");
            self.retrying(&vm.name, "update", || async {
                let live = self.api.vm_config(&node, vmid).await?;
                let mut changes = Params::new();
                for (key, value) in wanted {
                    if !crate::plan::same_value(key, live.get(key).map(String::as_str), value) {
                        changes.insert(key.clone(), value.clone());
                    }
                }
                let delete: Vec<&String> = delete
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
        if restart {
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
                self.wait_task(&vm.node.0, &upid).await?;
                Ok(())
            })
            .await?;
            self.boundary()?;
        }
        self.finish_chain(vm, Known::default()).await
    }
}
