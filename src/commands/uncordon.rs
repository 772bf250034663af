//! `provision uncordon --profile P NODE`: `kubectl uncordon` on a Ready server.

use std::time::Duration;

use crate::cli::UncordonArgs;
use crate::exec::drain;
use crate::exit::ExitStatus;

use super::Context;
use super::output::UncordonOutput;

pub async fn run(context: &Context, args: UncordonArgs) -> anyhow::Result<ExitStatus> {
    let (loaded, context) =
        &super::scope::load_scoped(context, &args.profile, &args.overrides, false)?;
    let (nodes, connector) =
        drain::open_cluster(&loaded.profile, &context.workspace, Duration::from_secs(60))?;
    let (_, node) = drain::find_node(&nodes, &args.node, &loaded.source_name)?;
    let report = drain::uncordon(&nodes, &connector, &node).await?;
    context.reporter.result(&UncordonOutput { report: &report });
    Ok(ExitStatus::Success)
}
