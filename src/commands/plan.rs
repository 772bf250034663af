//! `provision plan --profile P [--destroy | --replace-node NODE] [--detailed-exitcode]
//! [--simulate]`: observe, plan `up` (or `down`, or `replace-node NODE`), print the diff (or JSON).

use crate::cli::{OutputFormat, PlanArgs};
use crate::exec::{self, session};
use crate::exit::ExitStatus;
use crate::profile;

use super::Context;

pub async fn run(context: &Context, args: PlanArgs) -> anyhow::Result<ExitStatus> {
    if !args.detailed_exitcode {
        return show(context, args).await.map(|_| ExitStatus::Success);
    }
    // terraform's `-detailed-exitcode`: 2 means changes, so every error is 1.
    Ok(match show(context, args).await {
        Ok(true) => ExitStatus::Changes,
        Ok(false) => ExitStatus::Success,
        Err(error) => {
            super::report_error(&context.reporter, &error);
            ExitStatus::DetailedError
        }
    })
}

/// Observes, plans and prints; says whether the plan has changes.
async fn show(context: &Context, args: PlanArgs) -> anyhow::Result<bool> {
    let cluster_args = args.cluster;
    let loaded = profile::load(&cluster_args.profile, &context.workspace.root)?;
    let opened = session::open(
        &context.workspace,
        &loaded.profile,
        super::simulator(&cluster_args.sim).as_ref(),
    )
    .await?;
    let state = crate::state::load(&context.workspace.state_dir().join("state.json"))?;
    let (_inventory, plan) = if args.destroy {
        exec::observe_and_plan_down(
            opened.connection.api.as_ref(),
            opened.connection.auth.clone(),
            &loaded.profile,
            &state,
        )
        .await?
    } else {
        // `plan` changes nothing: host keys are previewed, not stored (`up` stores them).
        let seeds = session::WorkspaceSeeds::for_run(
            &loaded.profile,
            &context.workspace,
            cluster_args.sim.simulate,
        )?
        .preview_only();
        let intent = match &args.replace_node {
            Some(node) => crate::plan::Intent::ReplaceNode { node: node.clone() },
            None => crate::plan::Intent::Converge,
        };
        session::observe_and_plan_intent(
            opened.connection.api.as_ref(),
            opened.connection.auth.clone(),
            &loaded.profile,
            &state,
            &seeds,
            &context.workspace.root,
            rolling_options(context, &args.rolling),
            &intent,
        )
        .await?
    };
    match context.reporter.format() {
        OutputFormat::Json => context.reporter.json(&crate::plan::render_json(&plan)),
        // Values from the profile or from Proxmox must not drive the terminal.
        OutputFormat::Text => context
            .reporter
            .data(&profile::diagnostic::neutralise_lines(
                &crate::plan::render_text(&plan),
            )),
    }
    opened.close().await;
    Ok(plan.has_changes())
}

/// The planner's rolling options from the command line and the workspace: drains are planned
/// once phase 2 has written the cluster's kubeconfig (the cluster runs).
pub(super) fn rolling_options(
    context: &Context,
    args: &crate::cli::RollingArgs,
) -> crate::plan::RollingOptions {
    crate::plan::RollingOptions {
        max_unavailable: args.max_unavailable,
        force: args.force,
        cluster_running: context.workspace.kubeconfig_path().exists(),
    }
}
