//! `provision sim serve`: the Proxmox simulator as a standalone HTTPS server (for curl, other
//! tools, or a provision run in another process with PROXMOX_VE_ENDPOINT pointed at it).

use crate::cli::SimCommand;
use crate::exit::ExitStatus;

use super::{Context, UserError};

pub async fn run(_context: &Context, command: SimCommand) -> anyhow::Result<ExitStatus> {
    match command {
        SimCommand::Serve(args) => match pve_sim::serve(args.serve).await {
            Ok(()) => Ok(ExitStatus::Success),
            Err(error @ pve_sim::ServeError::Inventory { .. }) => Err(UserError::new(
                format!("{error}: {}", source_text(&error)),
                Some("use a built-in fixture (pve-a100, pve-sentinel, pve-sentinel-acs, pve-iommu-off, pve-cluster-4, pve-ci, pve-homelab, pve-gpu) or a TOML file"),
            )
            .into()),
            Err(pve_sim::ServeError::Sim(pve_sim::SimError::StateParse { path, source })) => Err(
                crate::exec::simulate::invalid_state_file(&path, &source).into(),
            ),
            Err(error @ (pve_sim::ServeError::Sim(_) | pve_sim::ServeError::Signal(_))) => {
                Err(error.into())
            }
        },
    }
}

fn source_text(error: &dyn std::error::Error) -> String {
    error.source().map(ToString::to_string).unwrap_or_default()
}
