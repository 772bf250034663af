//! `provision gc (--expired | --older-than D) [--dry-run] [--simulate]`: destroy the provision
//! clusters the VMs' tags say are expired or old, without any workspace state.

use std::sync::Arc;

use crate::cli::GcArgs;
use crate::exec::reap::{self, GcSelection};
use crate::exec::{ExecOptions, session};
use crate::exit::ExitStatus;

use super::Context;
use super::output::clusters::{ClusterRow, GcCluster, GcFailure, GcOutput};

pub async fn run(context: &Context, args: GcArgs) -> anyhow::Result<ExitStatus> {
    let opened =
        session::open_workspace(&context.workspace, super::simulator(&args.sim).as_ref()).await?;
    let result = collect(context, &args, &opened).await;
    opened.close().await;
    let output = result?;
    context.reporter.result(&output);
    // One cluster that could not be destroyed does not keep the others: each is tried, and
    // the run fails (exit 2) naming those left.
    Ok(if output.failed.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

async fn collect(
    context: &Context,
    args: &GcArgs,
    opened: &session::Opened,
) -> anyhow::Result<GcOutput> {
    let api = &opened.connection.api;
    let now = super::list::unix_now();
    let selection = GcSelection {
        expired: args.expired,
        older_than: args.older_than.map(|age| age.as_secs()),
    };
    let mut output = GcOutput {
        dry_run: args.dry_run,
        now,
        clusters: Vec::new(),
        kept: Vec::new(),
        failed: Vec::new(),
        mutating_calls: 0,
    };
    for cluster in reap::tagged_clusters(api.as_ref()).await? {
        let Some(reason) = selection.reason(&cluster, now) else {
            output.kept.push(cluster.name.clone());
            continue;
        };
        if !args.dry_run {
            context.reporter.status(&format!(
                "destroying cluster {} ({reason}): {} VMs",
                cluster.name,
                cluster.vms.len()
            ));
            let destroyed = reap::destroy_tagged(
                Arc::clone(api),
                &cluster,
                Arc::new(context.reporter.clone()),
                ExecOptions {
                    poll_scale: if args.sim.simulate {
                        args.sim.sim_time_scale
                    } else {
                        1.0
                    },
                    ..ExecOptions::default()
                },
            )
            .await;
            match destroyed {
                Ok(report) => output.mutating_calls += report.mutating_calls,
                Err(error) => {
                    output.failed.push(GcFailure {
                        cluster: cluster.name.clone(),
                        error: format!("{error:#}"),
                    });
                    continue;
                }
            }
        }
        output.clusters.push(GcCluster {
            row: ClusterRow::new(&cluster, now),
            reason,
        });
    }
    Ok(output)
}
