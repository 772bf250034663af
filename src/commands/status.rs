//! `provision status --profile P`: the state's VMs next to what Proxmox reports.

use crate::cli::ClusterArgs;
use crate::exec::session;
use crate::exit::ExitStatus;
use crate::profile;

use super::Context;
use super::output::{StatusOutput, StatusRow};

pub async fn run(context: &Context, args: ClusterArgs) -> anyhow::Result<ExitStatus> {
    let loaded = profile::load(&args.profile, &context.workspace.root)?;
    let state = crate::state::load(&context.workspace.state_dir().join("state.json"))?;
    let opened = session::open(
        &context.workspace,
        &loaded.profile,
        super::simulator(&args.sim).as_ref(),
    )
    .await?;
    let resources = opened.connection.api.cluster_resources(Some("vm")).await?;
    let output = StatusOutput {
        vms: state
            .vms
            .values()
            .map(|record| {
                let live = resources.iter().find(|r| r.vmid == Some(record.vmid));
                StatusRow::new(record, live.map(|r| (r.node.clone(), r.status.clone())))
            })
            .collect(),
    };
    context.reporter.result(&output);
    opened.close().await;
    Ok(ExitStatus::Success)
}
