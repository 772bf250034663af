//! The steps that make one VM exist and run: create (or clone), resize, start, and the
//! bounded wait for its guest agent to report the planned address.

use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::inventory::cluster_tag;
use crate::plan::{ImageSource, PlannedVm, disk_size_gib};
use crate::profile::model::ImageStrategy;
use crate::pve::{Params, PveError};

use super::runner::Runner;

/// What a VM's steps learned about it, so the next step of its chain need not read it again.
/// Empty ([`Known::default`]) means: read it.
#[derive(Debug, Default)]
pub(super) struct Known {
    /// Its config as it is now (disk sizes may predate a resize; nothing after resize reads
    /// them).
    pub(super) config: Option<Params>,
    /// It is stopped: this run created it and has not started it.
    pub(super) stopped: bool,
}

impl Runner {
    /// Create the VM unless it exists; an existing VMID that is not ours is an error.
    ///
    /// `planned_free`: the plan saw the VMID free and nothing of this run has sent a create for
    /// it yet (the first attempt of a create or replace), so the create is sent without looking
    /// first. A VMID taken since (another cluster's plan) fails the create with `already
    /// exists`, and the retry looks.
    pub(super) async fn create(&self, vm: &PlannedVm, planned_free: bool) -> anyhow::Result<Known> {
        let node = vm.node.clone();
        let vmid = vm.vmid;
        let tag = cluster_tag(&self.cluster);
        let existing = if planned_free {
            None
        } else {
            self.api
                .cluster_resources(Some("vm"))
                .await?
                .into_iter()
                .find(|r| r.vmid == Some(vm.vmid.0))
        };
        if let Some(existing) = existing {
            let ours = existing.name.as_deref() == Some(vm.name.as_str())
                && existing.tag_list().contains(&tag.as_str());
            if !ours {
                return Err(super::race::RaceError::VmidTaken {
                    vmid: vm.vmid.0,
                    by: existing.name.unwrap_or_default(),
                    node: existing.node.unwrap_or_default(),
                }
                .into());
            }
            if matches!(existing.lock.as_deref(), Some("create" | "clone")) {
                // A create or clone from an interrupted run is still running: wait for it.
                return Err(PveError::LockTimeout {
                    path: format!("/nodes/{}/qemu/{}", vm.node, vm.vmid),
                    message: "VM is still being created".to_owned(),
                }
                .into());
            }
            if matches!(vm.image, ImageSource::Template { .. }) {
                // Cloned by an interrupted run, maybe before its own config was applied.
                let config = self.configure_clone(vm).await?;
                return Ok(Known {
                    config: Some(config),
                    stopped: false,
                });
            }
            return Ok(Known::default());
        }
        if let ImageSource::Template {
            template,
            name,
            strategy,
        } = &vm.image
        {
            let config = self
                .clone_from_template(vm, *template, name, *strategy)
                .await?;
            return Ok(Known {
                config: Some(config),
                stopped: true,
            });
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
                self.wait_task(&vm.node.0, &upid).await?;
            }
            ImageSource::Clone {
                template,
                template_node,
            } => {
                let mut clone = Params::new();
                clone.insert("newid".into(), vm.vmid.to_string());
                clone.insert("name".into(), vm.name.clone());
                clone.insert("full".into(), "1".into());
                clone.insert("target".into(), vm.node.0.clone());
                clone.insert("storage".into(), storage.clone());
                self.mutated();
                let upid = self.api.vm_clone(template_node, *template, &clone).await?;
                self.wait_task(&template_node.0, &upid).await?;
                let mut config = vm.params.clone();
                config.remove("vmid");
                config.remove("pool");
                self.mutated();
                let upid = self.api.vm_config_post(&node, vmid, &config).await?;
                self.wait_task(&vm.node.0, &upid).await?;
            }
            ImageSource::Template { .. } => {
                bail!("internal: {} is a template clone", vm.name)
            }
        }
        Ok(Known {
            config: None,
            stopped: true,
        })
    }

    /// Grow the disks the plan resizes; returns the config it looked at (`known`, else read).
    pub(super) async fn resize(
        &self,
        vm: &PlannedVm,
        known: Option<Params>,
    ) -> anyhow::Result<Params> {
        let node = vm.node.clone();
        let config = match known {
            Some(config) => config,
            None => self.api.vm_config(&node, vm.vmid).await?,
        };
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
            // Growing a linked clone's disk is metadata (its storage has snapshots: thin LVM,
            // ZFS, RBD, qcow2), no load on the node worth a slot the starts need.
            let _slot = if matches!(
                vm.image,
                ImageSource::Template {
                    strategy: ImageStrategy::LinkedClone,
                    ..
                }
            ) {
                self.check_interrupt()?;
                None
            } else {
                Some(self.node_slot(&vm.node).await?)
            };
            self.mutated();
            let upid = self
                .api
                .vm_resize(&node, vm.vmid, &resize.disk, &resize.size)
                .await?;
            self.wait_task(&vm.node.0, &upid).await?;
        }
        Ok(config)
    }

    /// Start the VM unless it runs (`stopped`: known not to, so not asked).
    pub(super) async fn start(&self, vm: &PlannedVm, stopped: bool) -> anyhow::Result<()> {
        let node = vm.node.clone();
        if !stopped && self.api.vm_status(&node, vm.vmid).await?.status == "running" {
            return Ok(());
        }
        let _slot = self.node_slot(&vm.node).await?;
        self.mutated();
        let upid = self.api.vm_start(&node, vm.vmid).await?;
        self.wait_task(&vm.node.0, &upid).await?;
        Ok(())
    }

    /// Bounded wait: the guest agent answers and reports the planned address.
    pub(super) async fn wait_guest(&self, vm: &PlannedVm) -> anyhow::Result<()> {
        use crate::pve::wait::{
            Check, PollInterval, WaitError, agent_error_is_final, agent_reports_address,
            await_condition,
        };
        let node = vm.node.clone();
        let vmid = vm.vmid;
        let wanted = vm.address.to_string();
        // The agent answers some 15 s after boot on real hardware. The boot passes before it
        // can: wait the shortest boot seen on the node (else a typical 15 s at the speed its
        // tasks showed; the start task was seen to end a little after it did), and 2 % more
        // for an estimate a little short, then look every 3 % of it, more rarely as it runs
        // late. Before the node's speed is known: from 50 ms up to 1 s.
        let boot = self.expected_boot(&vm.node);
        tracing::debug!(vm = %vm.name, ?boot, "guest agent: expected boot");
        let started = tokio::time::Instant::now();
        let floor = self.options.poll(Duration::from_millis(50));
        let interval = match boot {
            Some(boot) => {
                tokio::time::sleep(boot.mul_f64(1.02)).await;
                let first = boot.mul_f64(0.03).max(floor);
                PollInterval::growing(
                    first,
                    self.options.poll(Duration::from_secs(1)).max(first),
                    1.5,
                )
            }
            None => PollInterval::growing(floor, self.options.poll(Duration::from_secs(1)), 1.5),
        };
        let what = format!("the guest agent of {} to report {wanted}", vm.name);
        // One request per look: qemu-server pings the agent itself before every command, and
        // answers `QEMU guest agent is not running` until it does.
        let probes = std::sync::atomic::AtomicU32::new(0);
        let waited = await_condition(&what, self.options.guest_timeout, interval, || async {
            probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self.api.agent_network_interfaces(&node, vmid).await {
                Ok(interfaces) => Ok(agent_reports_address(&interfaces, &wanted)),
                Err(error) if agent_error_is_final(&error) => Err(error),
                Err(error) => Ok(Check::Pending(error.to_string())),
            }
        })
        .await;
        match waited {
            Ok(()) => {
                // A guest that answered the first look had booted before: it says nothing
                // about how long a boot takes.
                if probes.into_inner() > 1 {
                    self.booted(&vm.node, started.elapsed());
                }
                Ok(())
            }
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
}
