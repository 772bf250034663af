//! `provision list [--simulate]`: every provision cluster on the Proxmox, from its VMs' tags.

use crate::cli::ListArgs;
use crate::exec::{reap, session};
use crate::exit::ExitStatus;

use super::Context;
use super::output::clusters::{ClusterRow, ListOutput};

pub async fn run(context: &Context, args: ListArgs) -> anyhow::Result<ExitStatus> {
    let opened =
        session::open_workspace(&context.workspace, super::simulator(&args.sim).as_ref()).await?;
    let clusters = reap::tagged_clusters(opened.connection.api.as_ref()).await;
    opened.close().await;
    let now = unix_now();
    let clusters = clusters?
        .iter()
        .map(|cluster| ClusterRow::new(cluster, now))
        .collect();
    context.reporter.result(&ListOutput { now, clusters });
    Ok(ExitStatus::Success)
}

/// Seconds since the Unix epoch.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
