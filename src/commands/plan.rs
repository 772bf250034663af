//! `provision plan --profile P [--simulate]`: observe, plan, print the diff (or JSON).

use crate::cli::{ClusterArgs, OutputFormat};
use crate::exec::session;
use crate::exit::ExitStatus;
use crate::profile;

use super::Context;

pub async fn run(context: &Context, args: ClusterArgs) -> anyhow::Result<ExitStatus> {
    let loaded = profile::load(&args.profile, &context.workspace.root)?;
    let opened = session::open(
        &context.workspace,
        &loaded.profile,
        super::simulator(&args.sim).as_ref(),
    )
    .await?;
    let state = crate::state::load(&context.workspace.state_dir().join("state.json"))?;
    // `plan` changes nothing: host keys are previewed, not stored (`up` stores them).
    let seeds =
        session::WorkspaceSeeds::for_run(&loaded.profile, &context.workspace, args.sim.simulate)?
            .preview_only();
    let (_inventory, plan) = session::observe_and_plan(
        opened.connection.api.as_ref(),
        opened.connection.auth.clone(),
        &loaded.profile,
        &state,
        &seeds,
        &context.workspace.root,
    )
    .await?;
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
    Ok(ExitStatus::Success)
}
