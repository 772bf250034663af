//! `provision status --profile P`: the state's VMs next to what Proxmox reports.

use crate::cli::{ClusterArgs, OutputFormat};
use crate::exec::session;
use crate::exit::ExitStatus;
use crate::profile;

use super::Context;

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
    let mut rows = Vec::new();
    for record in state.vms.values() {
        let live = resources.iter().find(|r| r.vmid == Some(record.vmid));
        rows.push(serde_json::json!({
            "name": record.name,
            "vmid": record.vmid,
            "node": live.and_then(|r| r.node.clone()).unwrap_or_else(|| record.node.clone()),
            "phase": record.phase,
            "proxmox": live.and_then(|r| r.status.clone()).unwrap_or_else(|| "missing".to_owned()),
            "address": record.address,
            "gpus": record.gpus,
        }));
    }
    match context.reporter.format() {
        OutputFormat::Json => context.reporter.json(&serde_json::json!({ "vms": rows })),
        OutputFormat::Text => {
            let mut out = String::new();
            for row in &rows {
                out += &format!(
                    "{:<28} vmid {:<6} {:<10} {:<8} {:<8} {}\n",
                    row["name"].as_str().unwrap_or_default(),
                    row["vmid"],
                    row["node"].as_str().unwrap_or_default(),
                    row["phase"].as_str().unwrap_or_default(),
                    row["proxmox"].as_str().unwrap_or_default(),
                    row["address"].as_str().unwrap_or_default(),
                );
            }
            if rows.is_empty() {
                out = "no VMs in the state\n".to_owned();
            }
            context.reporter.data(&out);
        }
    }
    opened.close().await;
    Ok(ExitStatus::Success)
}
