//! `down`: carry out an [`Intent::Down`] plan. Which VMs go and which records are only
//! forgotten is decided in `plan/`; this file stops and purges, deletes seed ISOs and empties
//! the state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;

use crate::inventory::{self, AuthKind, Inventory, cluster_tag};
use crate::plan::{self, Intent, Plan, PlanContext, PlanInput};
use crate::profile::model::Profile;
use crate::pve::{NodeName, PveApi, PveError, VmId, VolumeId};
use crate::state::{State, StateStore};

use super::runner::Runner;
use super::{ExecEvent, ExecOptions, ProgressSink};

/// What `down` did.
#[derive(Debug, Clone, Serialize)]
pub struct DestroyReport {
    pub destroyed: Vec<String>,
    /// Templates provision built for the clone strategies, destroyed after the VMs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<String>,
    /// In the state but gone from Proxmox (or no longer tagged): dropped from the state only.
    pub forgotten: Vec<String>,
    pub mutating_calls: usize,
    pub seconds: f64,
}

/// Observe Proxmox and plan `down` for the state's VMs (`plan --destroy` prints this plan).
pub async fn observe_and_plan_down(
    api: &dyn PveApi,
    auth: AuthKind,
    profile: &Profile,
    state: &State,
) -> anyhow::Result<(Inventory, Plan)> {
    state.check_cluster(&profile.cluster.name)?;
    let inventory = inventory::observe(api, profile, auth)
        .await
        .context("observing Proxmox")?;
    let context = PlanContext::default();
    let input = PlanInput {
        profile,
        inventory: &inventory,
        state,
        context: &context,
    };
    let plan = match plan::plan(&input, Intent::Down) {
        Ok(plan) => plan,
        Err(error) => return Err(error.into()),
    };
    Ok((inventory, plan))
}

/// `provision down`: run a down plan. Each planned VM is stopped and purged (only while it
/// still carries the cluster tag) with its seed ISO; each forgotten record loses only its seed
/// ISO; both leave the state.
pub async fn destroy(
    api: Arc<dyn PveApi>,
    plan: &Plan,
    store: StateStore,
    events: Arc<dyn ProgressSink>,
    options: ExecOptions,
) -> anyhow::Result<(DestroyReport, StateStore)> {
    if plan.intent != Intent::Down {
        bail!("internal: `down` runs only a down plan");
    }
    let started = Instant::now();
    let runner = Arc::new(Runner::new(
        Arc::clone(&api),
        plan,
        store,
        None,
        events,
        options,
    ));
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
    let destroyed: Vec<String> = runner
        .run_actions(plan)
        .await?
        .into_iter()
        .map(|done| done.action.vm().to_owned())
        .collect();
    // Templates last: a linked clone's disk may refer to its template's base volume.
    let templates = runner.destroy_templates(&plan.templates).await?;
    let mut mutating = runner.mutating.load(Ordering::SeqCst);
    let runner =
        Arc::try_unwrap(runner).map_err(|_| anyhow!("internal: VM tasks still hold the runner"))?;
    let mut store = runner.store.into_inner();
    // Seeds of VMs that are gone (or not ours any more) are still ours to remove.
    for forget in &plan.forget {
        if let Some(volid) = &forget.iso {
            let node = forget.node.clone();
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
        for forget in &plan.forget {
            state.vms.remove(&forget.vm);
        }
        // Templates Proxmox no longer shows as this cluster's are only forgotten.
        state.templates.clear();
    })?;
    Ok((
        DestroyReport {
            destroyed,
            templates,
            forgotten: plan.forget.iter().map(|f| f.vm.clone()).collect(),
            mutating_calls: mutating,
            seconds: started.elapsed().as_secs_f64(),
        },
        store,
    ))
}

impl Runner {
    pub(super) async fn destroy(
        &self,
        name: &str,
        node: &NodeName,
        vmid: VmId,
    ) -> anyhow::Result<()> {
        self.destroy_vm_only(name, node, vmid).await?;
        let iso = {
            let store = self.store.lock().await;
            store.state().vms.get(name).and_then(|r| r.iso.clone())
        };
        if let Some(volid) = iso {
            let storage = VolumeId(volid.clone()).storage().to_owned();
            let first = std::sync::atomic::AtomicBool::new(true);
            self.retrying(name, "delete iso", || {
                let reread = !first.swap(false, std::sync::atomic::Ordering::SeqCst);
                self.delete_iso(node, &storage, &volid, reread)
            })
            .await?;
        }
        self.record(|state| {
            state.vms.remove(name);
        })
        .await?;
        Ok(())
    }

    /// Hard stop (bounded) and purge; only a VM that still carries this cluster's tag.
    pub(super) async fn destroy_vm_only(
        &self,
        name: &str,
        node: &NodeName,
        vmid: VmId,
    ) -> anyhow::Result<()> {
        self.step(name, "destroy");
        let tag = cluster_tag(&self.cluster);
        self.retrying(name, "destroy", || async {
            let Some(resource) = self
                .api
                .cluster_resources(Some("vm"))
                .await?
                .into_iter()
                .find(|r| r.vmid == Some(vmid.0))
            else {
                return Ok(());
            };
            if !resource.tag_list().contains(&tag.as_str()) {
                bail!(
                    "VM {vmid} on {} no longer carries tag {tag}; refusing to delete it",
                    resource.node.unwrap_or_default()
                );
            }
            let node = resource.node.clone().map_or_else(|| node.clone(), NodeName);
            let _slot = self.node_slot(&node).await?;
            if resource.status.as_deref() == Some("running") {
                self.mutated();
                let upid = self
                    .api
                    .vm_stop(&node, vmid, Some(self.options.stop_timeout_secs))
                    .await?;
                self.wait_task(&node.0, &upid).await?;
            }
            self.mutated();
            let upid = self.api.vm_delete(&node, vmid).await?;
            self.wait_task(&node.0, &upid).await?;
            Ok(())
        })
        .await
    }
}
