//! `provision drain --profile P NODE`: the preflight, then `kubectl drain` on a Ready server.

use crate::cli::DrainArgs;
use crate::exec::drain::{self, DrainRequest};
use crate::exit::ExitStatus;
use crate::k3s::drain::DrainFlags;

use super::Context;
use super::output::DrainOutput;

pub async fn run(context: &Context, args: DrainArgs) -> anyhow::Result<ExitStatus> {
    let (loaded, context) =
        &super::scope::load_scoped(context, &args.profile, &args.overrides, false)?;
    let (nodes, connector) =
        drain::open_cluster(&loaded.profile, &context.workspace, args.timeout)?;
    let (_, node) = drain::find_node(&nodes, &args.node, &loaded.source_name)?;
    let request = DrainRequest {
        node,
        flags: DrainFlags {
            force: args.force,
            delete_emptydir_data: args.delete_emptydir_data,
            allow_local_volumes: args.allow_local_volumes,
        },
        timeout: args.timeout,
        dry_run: args.dry_run,
    };
    if !args.dry_run {
        context.reporter.status(&format!(
            "draining {} (timeout {}s)",
            request.node,
            args.timeout.as_secs()
        ));
    }
    let report = drain::drain(&nodes, &connector, &request).await?;
    context.reporter.result(&DrainOutput { report: &report });
    match report.error() {
        Some(error) => Err(error.into()),
        None => Ok(ExitStatus::Success),
    }
}
