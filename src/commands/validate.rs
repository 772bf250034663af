//! `provision validate --profile NAME|PATH`: load, check, summarise.

use crate::cli::{OutputFormat, ValidateArgs};
use crate::exit::ExitStatus;
use crate::profile::{self, Role};

use super::Context;

pub async fn run(context: &Context, args: ValidateArgs) -> anyhow::Result<ExitStatus> {
    let loaded = profile::load(&args.profile, &context.workspace.root)?;
    let profile = &loaded.profile;
    let nodes = profile.nodes();
    let range = profile.proxmox.vmid_range;
    match context.reporter.format() {
        OutputFormat::Json => {
            context.reporter.json(&serde_json::json!({
                "valid": true,
                "profile": args.profile,
                "source": loaded.source_name,
                "summary": {
                    "cluster": profile.cluster.name,
                    "servers": profile.server_count(),
                    "agents": profile.vm_count() - profile.server_count(),
                    "gpus": profile.gpu_count(),
                    "vmid_range": [range.start, range.end],
                    "proxmox_nodes": profile.proxmox.nodes,
                    "nodes": nodes,
                },
                "diagnostics": loaded.warnings,
            }));
        }
        OutputFormat::Text => {
            context
                .reporter
                .diagnostics(&loaded.warnings, Some(&loaded.text));
            let mut out = format!(
                "{}: valid ({} warning(s))\ncluster {}: {} VMs ({} servers, {} agents), {} GPUs, VMIDs {}-{} on {}\n",
                loaded.source_name,
                loaded.warnings.len(),
                profile.cluster.name,
                profile.vm_count(),
                profile.server_count(),
                profile.vm_count() - profile.server_count(),
                profile.gpu_count(),
                range.start,
                range.end,
                profile.proxmox.nodes.join(", "),
            );
            let width = nodes.iter().map(|node| node.name.len()).max().unwrap_or(0);
            for node in &nodes {
                let role = match node.role {
                    Role::Server => "server",
                    Role::Agent => "agent",
                };
                out += &format!("  {:<width$}  {role:<6}  {}\n", node.name, node.address);
            }
            context.reporter.data(&out);
        }
    }
    Ok(ExitStatus::Success)
}
