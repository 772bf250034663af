//! `provision doctor --profile P`: the read-only preflight of the Proxmox side, one line per
//! check (✓ pass, ! warning, ✗ blocks `up`) with its fix; exit 1 when anything blocks `up`.

use crate::cli::ClusterArgs;
use crate::exec::doctor::{self, Check, DoctorInput, Outcome};
use crate::exec::session;
use crate::exit::ExitStatus;

use super::Context;
use super::output::DoctorOutput;

pub async fn run(context: &Context, args: ClusterArgs) -> anyhow::Result<ExitStatus> {
    let (loaded, context) =
        &super::scope::load_scoped(context, &args.profile, &args.overrides, false)?;
    let profile = &loaded.profile;
    let state = crate::state::load(&context.workspace.state_dir().join("state.json"))?;
    let opened = session::open(
        &context.workspace,
        profile,
        super::simulator(&args.sim).as_ref(),
    )
    .await?;
    let seeds = session::WorkspaceSeeds::for_run(profile, &context.workspace, args.sim.simulate)?;
    let report = doctor::run(
        opened.connection.api.as_ref(),
        &opened.connection.auth,
        &DoctorInput {
            profile,
            state: &state,
            seeds: &seeds,
            workspace_root: &context.workspace.root,
            rolling: crate::plan::RollingOptions::default(),
        },
    )
    .await;
    opened.close().await;
    context.reporter.result(&DoctorOutput {
        ok: !report.blocks(),
        checks: &report.checks,
    });
    Ok(if report.blocks() {
        ExitStatus::UserError
    } else {
        ExitStatus::Success
    })
}

/// One line per check, the fix indented under anything that is not a pass.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        let mark = match check.outcome {
            Outcome::Pass => "✓",
            Outcome::Warn => "!",
            Outcome::Fail => "✗",
        };
        out += &format!("{mark} {}: {}\n", check.check, check.detail);
        if let Some(fix) = &check.fix {
            out += &format!("    fix: {fix}\n");
        }
    }
    let failed = checks.iter().filter(|c| c.outcome == Outcome::Fail).count();
    out += &match failed {
        0 => "nothing blocks `provision up`\n".to_owned(),
        n => format!("{n} check(s) block `provision up`\n"),
    };
    out
}
