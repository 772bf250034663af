//! `provision status --profile P`: the state's VMs next to what Proxmox reports, and the
//! Kubernetes cluster as its servers see it (nodes, etcd, findings). Exit 0 healthy (or
//! degraded), 2 when no server answers, 3 when a VM is not running or the cluster is unhealthy.

use crate::cli::{Guests, StatusArgs};
use crate::exec::cluster_status::{self, ClusterObservation};
use crate::exec::session;
use crate::exit::ExitStatus;

use super::Context;
use super::output::{StatusOutput, StatusRow};

pub async fn run(context: &Context, args: StatusArgs) -> anyhow::Result<ExitStatus> {
    let guests = args.guests;
    let args = args.cluster;
    let (loaded, context) =
        &super::scope::load_scoped(context, &args.profile, &args.overrides, false)?;
    let state = crate::state::load(&context.workspace.state_dir().join("state.json"))?;
    let opened = session::open(
        &context.workspace,
        &loaded.profile,
        super::simulator(&args.sim).as_ref(),
    )
    .await?;
    let resources = opened.connection.api.cluster_resources(Some("vm")).await?;
    // Simulated VMs have guests only with `--guests testbed` (the test hosts that played them).
    let simulated = opened.simulator.is_some() && guests == Guests::None;
    opened.close().await;
    let records: Vec<_> = state.vms.values().collect();
    let cluster = if records.is_empty() {
        ClusterObservation::NotChecked {
            reason: "no VMs in the state".to_owned(),
        }
    } else if simulated {
        ClusterObservation::NotChecked {
            reason: "simulated VMs have no guests".to_owned(),
        }
    } else {
        context
            .reporter
            .status("asking the servers about the cluster over SSH");
        match cluster_status::observe_over_ssh(&loaded.profile, &context.workspace, &records).await
        {
            ClusterObservation::Unreachable { reason }
                if !context.workspace.kubeconfig_path().exists() =>
            {
                ClusterObservation::Unreachable {
                    reason: format!(
                        "{reason} (no kubeconfig in the workspace: phase 2 has not completed; run `provision up`)"
                    ),
                }
            }
            observed => observed,
        }
    };
    let output = StatusOutput {
        vms: records
            .iter()
            .map(|record| {
                let live = resources.iter().find(|r| r.vmid == Some(record.vmid));
                StatusRow::new(record, live.map(|r| (r.node.clone(), r.status.clone())))
            })
            .collect(),
        cluster,
    };
    context.reporter.result(&output);
    Ok(output.exit_status())
}
