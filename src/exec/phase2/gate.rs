//! The k3s [`RollingGate`] `up` uses once phase 2 has bootstrapped the cluster: before a node
//! is disrupted, check quorum and drain it from another Ready server; after it is back, wait
//! until it is Ready again (and an etcd member, for a server) and uncordon it.

use anyhow::{Context as _, bail};
use async_trait::async_trait;

use super::waits::wait_until;
use super::{Connector, GuestNode, Phase2Options, get_nodes, run_checked};
use crate::exec::rolling::RollingGate;
use crate::k3s::cluster::ClusterNode;
use crate::k3s::rolling::{drain_command, other_servers_not_ready, uncordon_command};
use crate::plan::WaveVm;
use crate::profile::model::Role;
use crate::ssh::RemoteExec;

/// Drains and uncordons through the cluster's servers over SSH.
pub struct K3sGate<C> {
    /// The cluster's nodes (servers are asked, in order).
    pub nodes: Vec<GuestNode>,
    pub connector: C,
    /// `ready_timeout` bounds the wait for Ready and is the drain's timeout too.
    pub options: Phase2Options,
}

impl<C: Connector> K3sGate<C> {
    /// Whether the cluster has a server other than `vm`.
    fn has_other_server(&self, vm: &str) -> bool {
        self.nodes
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
            .nodes
            .iter()
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

    fn server_names(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|node| node.role == Role::Server)
            .map(|node| node.name.as_str())
            .collect()
    }
}

#[async_trait]
impl<C: Connector> RollingGate for K3sGate<C> {
    async fn before_disruption(&self, vm: &WaveVm) -> anyhow::Result<()> {
        if !self.has_other_server(&vm.vm) {
            // The only server: the whole cluster goes down with it, nowhere to drain to.
            return Ok(());
        }
        let (server, cluster) = self.other_server(&vm.vm).await?;
        if vm.role == Role::Server {
            let not_ready = other_servers_not_ready(&cluster, &self.server_names(), &vm.vm);
            if !not_ready.is_empty() {
                bail!(
                    "refusing to take server {} down: {} not Ready, and etcd would lose its quorum; \
                     bring {} back first (`k3s kubectl get nodes` on {})",
                    vm.vm,
                    not_ready.join(", "),
                    if not_ready.len() == 1 { "it" } else { "them" },
                    server.host()
                );
            }
        }
        if !cluster.iter().any(|node| node.name == vm.vm) {
            // Never joined (or already removed): nothing runs there to move.
            return Ok(());
        }
        run_checked(
            server.as_ref(),
            &drain_command(&vm.vm, self.options.ready_timeout)?,
        )
        .await
        .with_context(|| format!("draining {} before it goes down", vm.vm))?;
        Ok(())
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
        run_checked(server.as_ref(), &uncordon_command(&vm.vm)?)
            .await
            .with_context(|| format!("uncordoning {} after it came back", vm.vm))?;
        Ok(())
    }
}
