//! `replace-node`'s k3s side: the preflight (is the node alive, is there a server to work
//! through, does etcd stay healthy without it, is another server being changed), the steps
//! before the VM is replaced (snapshot, drain, stop k3s, member removal, Node deletion), the
//! final check after it joined, and the journal that makes a re-run resume.
//!
//! The servers asked are always others than the node being replaced; every step observes before
//! it acts ([`super::etcd_ops`]), so a step begun by a crashed run is simply run again.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::error::UserError;
use crate::k3s::cluster::{GET_NODES_COMMAND, parse_nodes};
use crate::k3s::config::unit_name;
use crate::k3s::drain::NodeName;
use crate::k3s::etcd::{EtcdMember, Snapshot, SnapshotName};
use crate::k3s::rolling::drain_command;
use crate::profile::model::Role;
use crate::pve::wait::{Check, PollInterval, WaitError, await_condition};
use crate::ssh::RemoteExec;
use crate::state::{ReplaceStep, State, StateStore, VmPhase};

use super::drain::{ApiServer, api_server};
use super::etcd_ops;
use super::phase2::{Connector, GuestNode};

/// Test hook: `PROVISION_TEST_KILL_AT=<point>` makes the process SIGKILL itself when it reaches
/// that point (`<step>` once the journal names the step, `<step>-done` once its action is done),
/// as `kill -9` would. The testbed's crash test uses it; it never fires otherwise.
pub const KILL_AT_ENV: &str = "PROVISION_TEST_KILL_AT";

/// Ends the process with SIGKILL when [`KILL_AT_ENV`] names `point`. The simulator's state
/// writer gets a moment first: a real Proxmox keeps its changes when its client dies.
pub fn kill_point(point: &str) {
    if std::env::var(KILL_AT_ENV).is_ok_and(|wanted| wanted == point) {
        std::thread::sleep(Duration::from_millis(300));
        let pid = std::process::id().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
        // Still alive (no `kill`?): abort, which unwinds nothing either.
        tracing::error!(?killed, point, "test kill point reached");
        std::process::abort();
    }
}

/// Record in the state that `step` begins, then pass the kill point of that name.
pub fn begin_step(store: &mut StateStore, step: ReplaceStep) -> anyhow::Result<()> {
    store.update(|state| {
        if let Some(journal) = state.replacing.as_mut() {
            journal.step = step;
        }
    })?;
    kill_point(step.as_str());
    Ok(())
}

/// The kill point after `step`'s action.
pub fn step_done(step: ReplaceStep) {
    kill_point(&format!("{}-done", step.as_str()));
}

/// The node being replaced and how to reach the cluster around it.
pub struct ReplaceContext<'a> {
    pub connector: &'a dyn Connector,
    /// Every node of the cluster (the one being replaced included).
    pub nodes: &'a [GuestNode],
    pub node: &'a GuestNode,
    pub name: NodeName,
    /// Bound on each wait (drain, member removal, Ready).
    pub timeout: Duration,
    pub poll: Duration,
}

/// What the preflight found.
#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    /// The server the steps run through.
    pub server: String,
    /// Why the node counts as dead (VM gone or stopped, SSH unreachable); `None` when alive.
    pub dead: Option<String>,
    /// The node is registered in Kubernetes.
    pub registered: bool,
    /// The etcd members seen (servers only).
    pub members: usize,
}

impl ReplaceContext<'_> {
    /// The other nodes (servers among them are asked for the API).
    fn others(&self) -> Vec<GuestNode> {
        self.nodes
            .iter()
            .filter(|node| node.name != self.node.name)
            .cloned()
            .collect()
    }

    /// A Ready server other than the node being replaced.
    pub async fn api(&self) -> anyhow::Result<ApiServer> {
        let others = self.others();
        api_server(&others, &self.node.name, self.connector)
            .await
            .with_context(|| {
                format!(
                    "no server other than {} answers the Kubernetes API",
                    self.node.name
                )
            })
    }

    /// The node itself over SSH, when it answers (`true` runs there).
    async fn reach_node(&self) -> Result<Box<dyn RemoteExec>, String> {
        let exec = self
            .connector
            .connect(self.node)
            .await
            .map_err(|error| format!("SSH: {error}"))?;
        match exec.run("true", None).await {
            Ok(output) if output.exit_status == 0 => Ok(exec),
            Ok(output) => Err(format!("`true` exited {}", output.exit_status)),
            Err(error) => Err(format!("SSH: {error}")),
        }
    }

    /// Refuse (nothing changed) unless the replacement can go ahead: another server answers,
    /// no other server is being changed, and (servers) etcd stays healthy without this one.
    /// `vm_running` is what Proxmox shows for the node's VM.
    pub async fn preflight(&self, state: &State, vm_running: bool) -> anyhow::Result<Preflight> {
        let changing: Vec<&str> = state
            .vms
            .values()
            .filter(|vm| vm.role == Role::Server && vm.name != self.node.name)
            .filter(|vm| vm.phase != VmPhase::Ready)
            .map(|vm| vm.name.as_str())
            .collect();
        if !changing.is_empty() {
            return Err(UserError::new(
                format!(
                    "refusing to replace {}; nothing was changed: server(s) {} are being changed (not finished in the state)",
                    self.node.name,
                    changing.join(", ")
                ),
                Some("finish that change first (`provision up`), then replace"),
            )
            .into());
        }
        let api = self.api().await?;
        let members = match self.node.role {
            Role::Server => etcd_ops::check_healthy_without(api.exec.as_ref(), &self.name)
                .await?
                .len(),
            Role::Agent => 0,
        };
        let dead = if vm_running {
            self.reach_node().await.err()
        } else {
            Some("its VM is gone or not running on Proxmox".to_owned())
        };
        Ok(Preflight {
            server: api.name.clone(),
            dead,
            registered: api.nodes.iter().any(|node| node.name == self.node.name),
            members,
        })
    }

    /// Save an etcd snapshot named `name` through another server; verified listed, non-empty.
    pub async fn snapshot(&self, name: &SnapshotName) -> anyhow::Result<Snapshot> {
        let api = self.api().await?;
        etcd_ops::save_snapshot(api.exec.as_ref(), name).await
    }

    /// `kubectl drain` from another server; `false` when the node is not registered.
    pub async fn drain(&self) -> anyhow::Result<bool> {
        let api = self.api().await?;
        if !api.nodes.iter().any(|node| node.name == self.node.name) {
            return Ok(false);
        }
        let command = drain_command(&self.node.name, self.timeout)?;
        let output = api.exec.run(&command, None).await?;
        if output.exit_status != 0 {
            bail!(
                "draining {} from {} failed: {}; it stays cordoned (`provision uncordon` gives it back); \
                 run replace-node again once the pods can move",
                self.node.name,
                api.name,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(true)
    }

    /// Stop and disable k3s on the node when it answers SSH; `false` when it does not.
    pub async fn stop_k3s(&self) -> anyhow::Result<bool> {
        let Ok(exec) = self.reach_node().await else {
            return Ok(false);
        };
        etcd_ops::stop_k3s(exec.as_ref(), unit_name(self.node.role)).await?;
        Ok(true)
    }

    /// Remove the node's etcd member through another server.
    pub async fn remove_member(&self) -> anyhow::Result<()> {
        let api = self.api().await?;
        etcd_ops::remove_member(api.exec.as_ref(), &self.name, self.timeout, self.poll).await
    }

    /// Delete the node's Node and node-password Secret through another server.
    pub async fn delete_node(&self) -> anyhow::Result<()> {
        let api = self.api().await?;
        etcd_ops::delete_node(api.exec.as_ref(), &self.name).await
    }

    /// Wait until the new node is Ready (a server: a voting member too; a GPU node: GPUs
    /// allocatable), then check that etcd has exactly `servers` voting members and no learner.
    pub async fn verify(&self, servers: usize, gpu: bool) -> anyhow::Result<Verified> {
        let api = self.api().await?;
        let exec = api.exec.as_ref();
        let waited = await_condition(
            &format!("{} to be back", self.node.name),
            self.timeout,
            PollInterval::fixed(self.poll),
            || async {
                Ok::<_, std::convert::Infallible>(match self.check_back(exec, servers, gpu).await {
                    Ok(check) => check,
                    Err(error) => Check::Pending(format!("{error:#}")),
                })
            },
        )
        .await;
        match waited {
            Ok(verified) => Ok(verified),
            Err(WaitError::Failed(never)) => match never {},
            Err(WaitError::TimedOut { last, .. }) => bail!(
                "timed out after {}s waiting for {} to be back (asked {}; last: {last})",
                self.timeout.as_secs(),
                self.node.name,
                api.name
            ),
        }
    }

    async fn check_back(
        &self,
        exec: &dyn RemoteExec,
        servers: usize,
        gpu: bool,
    ) -> anyhow::Result<Check<Verified, String>> {
        let name = &self.node.name;
        let nodes = parse_nodes(&run_ok(exec, GET_NODES_COMMAND).await?)?;
        let Some(node) = nodes.iter().find(|node| &node.name == name) else {
            return Ok(Check::Pending(format!("{name} is not registered")));
        };
        if !node.ready {
            return Ok(Check::Pending(format!("{name} is not Ready")));
        }
        if gpu && !gpus_allocatable(exec, &self.name).await? {
            return Ok(Check::Pending(format!("{name}: no GPU allocatable yet")));
        }
        let members = if self.node.role == Role::Server {
            etcd_ops::member_list(exec).await?
        } else {
            Vec::new()
        };
        if self.node.role == Role::Server
            && let Some(pending) = members_pending(&members, name, servers)
        {
            return Ok(Check::Pending(pending));
        }
        Ok(Check::Met(Verified {
            members: members.len(),
        }))
    }
}

/// After the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// etcd voting members (servers only; 0 for an agent).
    pub members: usize,
}

/// Why etcd is not yet as it should be once `node` is back: a learner, no voting member of
/// `node`, or a member count other than `servers`.
pub fn members_pending(members: &[EtcdMember], node: &str, servers: usize) -> Option<String> {
    if let Some(learner) = members.iter().find(|member| member.is_learner) {
        return Some(format!("etcd member {} is still a learner", learner.name));
    }
    if !members.iter().any(|member| member.node_name() == node) {
        return Some(format!("{node} has no etcd member yet"));
    }
    if members.len() != servers {
        return Some(format!(
            "etcd has {} members for {servers} servers",
            members.len()
        ));
    }
    None
}

/// `nvidia.com/gpu` allocatable on the node, or on the k3s stand-in (no device plugin, no
/// GPUs) the `provision.gpu`-style label phase 2 sets from the detected GPUs.
async fn gpus_allocatable(exec: &dyn RemoteExec, node: &NodeName) -> anyhow::Result<bool> {
    let json = run_ok(exec, &crate::k3s::etcd::get_node_command(node)).await?;
    let value: serde_json::Value = serde_json::from_str(&json)?;
    let allocatable = value
        .pointer("/status/allocatable/nvidia.com~1gpu")
        .and_then(serde_json::Value::as_str)
        .and_then(|count| count.parse::<u32>().ok())
        .unwrap_or(0);
    if allocatable > 0 {
        return Ok(true);
    }
    let standin = run_ok(exec, "k3s --version").await?.contains("(standin)");
    let labelled = value
        .pointer("/metadata/labels")
        .and_then(serde_json::Value::as_object)
        .is_some_and(|labels| labels.iter().any(|(key, _)| key.ends_with("gpu.count")));
    Ok(standin && labelled)
}

async fn run_ok(exec: &dyn RemoteExec, command: &str) -> anyhow::Result<String> {
    let output = exec.run(command, None).await?;
    if output.exit_status != 0 {
        bail!(
            "{}: `{command}` exited {}: {}",
            exec.host(),
            output.exit_status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
