//! The k3s [`RollingGate`] `up` uses once phase 2 has bootstrapped the cluster: before a node
//! is disrupted, check quorum (every other server Ready, etcd healthy without it, no learner),
//! take an etcd snapshot before the first server of the run, and drain it from another Ready
//! server; after it is back, wait until it is Ready again (for a server: an etcd member that
//! etcd reports healthy) and uncordon it. A node that is scaled down leaves the cluster before its VM is destroyed: k3s
//! stopped on it, its etcd member removed (k3s's annotation, then `removed-node-name`), its
//! Node and node-password Secret deleted.

use std::collections::BTreeSet;
use std::sync::Mutex;

use anyhow::{Context as _, anyhow, bail};
use async_trait::async_trait;

use super::waits::wait_until;
use super::{Connector, GuestNode, Phase2Options, get_nodes, run_checked};
use crate::exec::etcd_ops;
use crate::exec::rolling::RollingGate;
use crate::k3s::cluster::ClusterNode;
use crate::k3s::config::unit_name;
use crate::k3s::drain::NodeName;
use crate::k3s::etcd::{SnapshotName, member_healthy, members_of};
use crate::k3s::rolling::{drain_command, other_servers_not_ready, uncordon_command};
use crate::plan::{ActionKind, WaveVm};
use crate::profile::model::Role;
use crate::pve::wait::{Check, PollInterval, WaitError, await_condition};
use crate::ssh::RemoteExec;

/// Drains and uncordons through the cluster's servers over SSH.
pub struct K3sGate<C> {
    /// The cluster's nodes (servers are asked, in order).
    nodes: Vec<GuestNode>,
    connector: C,
    /// `ready_timeout` bounds the wait for Ready and is the drain's timeout too.
    options: Phase2Options,
    /// The snapshot taken before the first server disruption of this run, once taken.
    snapshot: tokio::sync::Mutex<Option<String>>,
    /// Nodes this gate took out of the cluster (scale-down): no longer asked, waited for or
    /// counted as servers.
    removed: Mutex<BTreeSet<String>>,
}

impl<C: Connector> K3sGate<C> {
    /// A gate over `nodes` (the cluster as the state knows it, leaving VMs included).
    pub fn new(nodes: Vec<GuestNode>, connector: C, options: Phase2Options) -> Self {
        Self {
            nodes,
            connector,
            options,
            snapshot: tokio::sync::Mutex::new(None),
            removed: Mutex::new(BTreeSet::new()),
        }
    }

    /// The cluster's nodes minus those this gate removed.
    fn members(&self) -> Vec<&GuestNode> {
        let removed = self
            .removed
            .lock()
            .map(|removed| removed.clone())
            .unwrap_or_default();
        self.nodes
            .iter()
            .filter(|node| !removed.contains(&node.name))
            .collect()
    }

    /// Whether the cluster has a server other than `vm`.
    fn has_other_server(&self, vm: &str) -> bool {
        self.members()
            .iter()
            .any(|node| node.role == Role::Server && node.name != vm)
    }

    /// A connection to a server that answers the API: another than `vm`, or `vm` itself when
    /// it is the only server.
    /// Returns it with the node list it answered.
    async fn other_server(
        &self,
        vm: &str,
    ) -> anyhow::Result<(Box<dyn RemoteExec>, Vec<ClusterNode>)> {
        let mut tried = Vec::new();
        let alone = !self.has_other_server(vm);
        for node in self
            .members()
            .into_iter()
            .filter(|node| node.role == Role::Server && (alone || node.name != vm))
        {
            match self.connector.connect(node).await {
                Ok(exec) => match get_nodes(exec.as_ref()).await {
                    Ok(cluster) => return Ok((exec, cluster)),
                    Err(error) => tried.push(format!("{}: {error:#}", node.name)),
                },
                Err(error) => tried.push(format!("{}: {error}", node.name)),
            }
        }
        bail!(
            "no other server answers the Kubernetes API to drain {vm} from ({})",
            if tried.is_empty() {
                "the cluster has no other server".to_owned()
            } else {
                tried.join("; ")
            }
        )
    }

    /// A connection to a server other than `vm` that answers the API (`vm` itself when it is
    /// the only server).
    pub(super) async fn other_server_exec(&self, vm: &str) -> anyhow::Result<Box<dyn RemoteExec>> {
        Ok(self.other_server(vm).await?.0)
    }

    fn server_names(&self) -> Vec<String> {
        self.members()
            .iter()
            .filter(|node| node.role == Role::Server)
            .map(|node| node.name.clone())
            .collect()
    }

    /// Refuse to take server `vm` down unless every other server is Ready and etcd stays
    /// healthy without its member (no learner, every other member healthy).
    async fn check_quorum(
        &self,
        server: &dyn RemoteExec,
        cluster: &[ClusterNode],
        vm: &str,
    ) -> anyhow::Result<()> {
        let names = self.server_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let not_ready = other_servers_not_ready(cluster, &names, vm);
        if !not_ready.is_empty() {
            bail!(
                "refusing to take server {vm} down: {} not Ready, and etcd would lose its quorum; \
                 bring {} back first (`k3s kubectl get nodes` on {})",
                not_ready.join(", "),
                if not_ready.len() == 1 { "it" } else { "them" },
                server.host()
            );
        }
        etcd_ops::check_healthy_without(server, &NodeName::new(vm)?).await?;
        Ok(())
    }

    /// An etcd snapshot on `server`, once per run (before the first server is disrupted).
    async fn snapshot_once(&self, server: &dyn RemoteExec) -> anyhow::Result<()> {
        let mut taken = self.snapshot.lock().await;
        if taken.is_none() {
            let name = SnapshotName::new(&format!("provision-pre-roll-{}", unix_seconds()))?;
            let snapshot = etcd_ops::save_snapshot(server, &name)
                .await
                .context("the etcd snapshot before the first server goes down")?;
            *taken = Some(snapshot.name);
        }
        Ok(())
    }

    /// Count the snapshot `name` (taken by the caller) as this run's.
    pub async fn snapshot_taken(&self, name: &str) {
        *self.snapshot.lock().await = Some(name.to_owned());
    }

    /// The snapshot this gate took (or was told about), if any.
    pub async fn snapshot(&self) -> Option<String> {
        self.snapshot.lock().await.clone()
    }

    /// `vm` leaves the cluster for good (its VM is destroyed next): k3s stopped on it, its
    /// etcd member removed (a server), its Node and node-password Secret deleted.
    async fn remove_from_cluster(
        &self,
        server: &dyn RemoteExec,
        vm: &WaveVm,
    ) -> anyhow::Result<()> {
        let name = NodeName::new(&vm.vm)?;
        // Stopped first, so the node cannot re-register or rejoin etcd; a VM that does not
        // answer any more has nothing running to stop.
        if let Some(node) = self.nodes.iter().find(|node| node.name == vm.vm)
            && let Ok(exec) = self.connector.connect(node).await
        {
            etcd_ops::stop_k3s(exec.as_ref(), unit_name(vm.role))
                .await
                .with_context(|| format!("stopping k3s on {} before it leaves", vm.vm))?;
        }
        if vm.role == Role::Server {
            etcd_ops::remove_member(
                server,
                &name,
                self.options.ready_timeout,
                self.options.poll_interval,
            )
            .await?;
        }
        etcd_ops::delete_node(server, &name).await?;
        self.removed
            .lock()
            .map_err(|_| anyhow!("internal: the gate's removed set is poisoned"))?
            .insert(vm.vm.clone());
        Ok(())
    }
}

/// Condition: etcd lists a member of `node`, a voter, answering healthy.
async fn member_back(
    server: &dyn RemoteExec,
    node: &str,
) -> Result<Check<(), String>, std::convert::Infallible> {
    let members = match etcd_ops::member_list(server).await {
        Ok(members) => members,
        Err(error) => return Ok(Check::Pending(format!("{error:#}"))),
    };
    let healthy = match etcd_ops::healthy_endpoints(server).await {
        Ok(healthy) => healthy,
        Err(error) => return Ok(Check::Pending(format!("{error:#}"))),
    };
    let own = members_of(&members, node);
    Ok(if own.is_empty() {
        Check::Pending("no etcd member".to_owned())
    } else if own.iter().any(|member| member.is_learner) {
        Check::Pending("a learner, not yet promoted".to_owned())
    } else if !own.iter().all(|member| member_healthy(member, &healthy)) {
        Check::Pending("its etcd member does not answer healthy".to_owned())
    } else {
        Check::Met(())
    })
}

/// Seconds since the epoch: snapshot names of different runs differ.
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[async_trait]
impl<C: Connector> RollingGate for K3sGate<C> {
    async fn before_disruption(&self, vm: &WaveVm) -> anyhow::Result<()> {
        if !self.has_other_server(&vm.vm) {
            // The only server: the whole cluster goes down with it, nowhere to drain to.
            return Ok(());
        }
        let (server, cluster) = self.other_server(&vm.vm).await?;
        let registered = cluster.iter().any(|node| node.name == vm.vm);
        if vm.role == Role::Server {
            self.check_quorum(server.as_ref(), &cluster, &vm.vm).await?;
            self.snapshot_once(server.as_ref()).await?;
        }
        if registered {
            run_checked(
                server.as_ref(),
                &drain_command(&vm.vm, self.options.ready_timeout)?,
            )
            .await
            .with_context(|| format!("draining {} before it goes down", vm.vm))?;
        }
        match vm.action {
            ActionKind::Destroy => self.remove_from_cluster(server.as_ref(), vm).await,
            ActionKind::Create | ActionKind::Update | ActionKind::Replace => Ok(()),
        }
    }

    async fn after_recovery(&self, vm: &WaveVm) -> anyhow::Result<()> {
        let (server, _) = self.other_server(&vm.vm).await?;
        wait_until(
            server.as_ref(),
            &[vm.vm.as_str()],
            vm.role == Role::Server,
            &self.options,
        )
        .await?;
        if vm.role == Role::Server {
            // k3s keeps a node Ready for 40 s after its last heartbeat: etcd says whether the
            // server is back in the quorum before the next one may go.
            let waited = await_condition(
                &format!("the etcd member of {} to be healthy", vm.vm),
                self.options.ready_timeout,
                PollInterval::fixed(self.options.poll_interval),
                || member_back(server.as_ref(), &vm.vm),
            )
            .await;
            match waited {
                Ok(()) => {}
                Err(WaitError::Failed(never)) => match never {},
                Err(WaitError::TimedOut { last, .. }) => bail!(
                    "timed out after {}s waiting for the etcd member of {} to be healthy again (last: {last}); `journalctl -u k3s` on it says why",
                    self.options.ready_timeout.as_secs(),
                    vm.vm
                ),
            }
        }
        run_checked(server.as_ref(), &uncordon_command(&vm.vm)?)
            .await
            .with_context(|| format!("uncordoning {} after it came back", vm.vm))?;
        Ok(())
    }
}
