//! `provision up --profile P [--simulate]`: observe, plan, validate, execute phase 1, then phase 2
//! (SSH, node preparation, k3s) through [`super::up_phase2`].

use std::sync::Arc;

use crate::cli::{OutputFormat, UpArgs};
use crate::exec::doctor::{self, DoctorInput, Outcome};
use crate::exec::{self, ExecOptions, session};
use crate::exit::ExitStatus;
use crate::profile;
use crate::state::StateStore;

use super::output::{PhaseOneOutput, UpOutput};
use super::{Context, UserError};

pub async fn run(context: &Context, up_args: UpArgs) -> anyhow::Result<ExitStatus> {
    let args = &up_args.cluster;
    let loaded = profile::load(&args.profile, &context.workspace.root)?;
    let profile = &loaded.profile;
    // Lock first: a second `up` fails fast, naming the holder.
    let store = StateStore::open(
        &context.workspace.state_dir(),
        &format!("up --profile {}", args.profile),
    )?;
    let opened = session::open(
        &context.workspace,
        profile,
        super::simulator(&args.sim).as_ref(),
    )
    .await?;
    let guests = super::up_phase2::attach_guests(&opened, up_args.phase2.guests)?;
    super::up_phase2::remember_guests(guests.as_deref(), store.state())?;
    let seeds = session::WorkspaceSeeds::for_run(profile, &context.workspace, args.sim.simulate);
    let seeds = Arc::new(seeds?);
    // Everything is validated here (profile, credentials and privileges, storages, bridge,
    // GPUs, hugepages, IOMMU, root-only keys) before the first mutating call: the same checks
    // as `provision doctor`.
    store.state().check_cluster(&profile.cluster.name)?;
    super::replace_node::refuse_unfinished(store.state(), &args.profile)?;
    let preflight = doctor::run(
        opened.connection.api.as_ref(),
        &opened.connection.auth,
        &DoctorInput {
            profile,
            state: store.state(),
            seeds: &seeds,
            workspace_root: &context.workspace.root,
            rolling: super::plan::rolling_options(context, &up_args.rolling),
        },
    )
    .await;
    for check in preflight
        .checks
        .iter()
        .filter(|c| c.outcome == Outcome::Warn)
    {
        context
            .reporter
            .status(&format!("warning: {}: {}", check.check, check.detail));
    }
    let plan = match preflight.observed {
        Some((_inventory, plan)) if !preflight.blocks() => plan,
        _ => {
            opened.close().await;
            return Err(UserError::new(
                format!(
                    "the preflight found what would stop `up`; nothing was changed on Proxmox:\n{}",
                    preflight.failures()
                ),
                Some("`provision doctor --profile P` shows every check"),
            )
            .into());
        }
    };
    let gate = match disruption_gate(
        context,
        &up_args,
        profile,
        &plan,
        guests.as_deref(),
        store.state(),
    ) {
        Ok(gate) => gate,
        Err(error) => {
            opened.close().await;
            return Err(error);
        }
    };
    let (report, mut store) = exec::apply_with_gate(
        Arc::clone(&opened.connection.api),
        &plan,
        store,
        seeds,
        Arc::new(context.reporter.clone()),
        ExecOptions {
            poll_scale: if args.sim.simulate {
                args.sim.sim_time_scale
            } else {
                1.0
            },
            ..ExecOptions::default()
        },
        gate,
    )
    .await?;
    let phase1 = PhaseOneOutput {
        cluster: &plan.cluster,
        vms: &report.vms,
        destroyed: &report.destroyed,
        mutating_calls: report.mutating_calls,
        seconds: report.seconds,
    };
    if context.reporter.format() == OutputFormat::Text {
        context.reporter.data(&phase1.to_string());
    }
    let phase2 = phase_two(
        context,
        &up_args,
        profile,
        guests.as_deref(),
        (&plan, &report),
        (&mut store, opened),
    )
    .await?;
    if context.reporter.format() == OutputFormat::Json {
        context.reporter.json(&UpOutput {
            phase1,
            phase2: phase2.output(),
        });
    }
    Ok(ExitStatus::Success)
}

/// Phase 2 on the plan's VMs, with the k3s upgrade of a running cluster first; the version it
/// converged to is recorded in the state. The session is closed when it ends, however it ends.
async fn phase_two(
    context: &Context,
    up_args: &UpArgs,
    profile: &crate::profile::Profile,
    guests: Option<&provision_testbed::TestbedGuests>,
    (plan, report): (&crate::plan::Plan, &exec::ApplyReport),
    (store, opened): (&mut StateStore, session::Opened),
) -> anyhow::Result<super::up_phase2::Phase2Result> {
    let phase2 = super::up_phase2::run(
        context,
        profile,
        &up_args.phase2,
        up_args.cluster.sim.simulate,
        guests,
        &report.vms,
        upgrade_options(context, up_args, plan, store.state()),
    )
    .await;
    opened.close().await;
    let phase2 = phase2?;
    if let super::up_phase2::Phase2Result::Done { .. } = &phase2 {
        store.update(|state| state.k3s_version = Some(profile.cluster.k3s_version.clone()))?;
    }
    Ok(phase2)
}

/// A running cluster (phase 2 wrote its kubeconfig, VMs of it stay) is upgraded in place when
/// the profile's k3s version differs from what it runs.
fn upgrade_options(
    context: &Context,
    up_args: &UpArgs,
    plan: &crate::plan::Plan,
    state: &crate::state::State,
) -> Option<crate::exec::phase2::UpgradeOptions> {
    let running =
        context.workspace.kubeconfig_path().exists() && plan.vms.iter().any(|vm| vm.exists);
    running.then(|| crate::exec::phase2::UpgradeOptions {
        max_unavailable: up_args.rolling.max_unavailable,
        recorded: state.k3s_version.clone(),
    })
}

/// The plan is shown; one that disrupts running VMs is confirmed (`--yes` answers for it);
/// then the gate around each disruption: k3s drains once the cluster runs, else nothing.
fn disruption_gate(
    context: &Context,
    up_args: &UpArgs,
    profile: &crate::profile::Profile,
    plan: &crate::plan::Plan,
    guests: Option<&provision_testbed::TestbedGuests>,
    state: &crate::state::State,
) -> anyhow::Result<Arc<dyn exec::RollingGate>> {
    show_plan(context, plan);
    if let Some(upgrade) = &plan.upgrade {
        super::confirm::confirm(
            context,
            &format!(
                "upgrade k3s of cluster {} from {} to {}, node by node in {} waves",
                plan.cluster,
                upgrade.from,
                upgrade.to,
                upgrade.waves.len()
            ),
            "",
            up_args.confirm.yes,
        )?;
    }
    if plan.rolling.is_empty() {
        return Ok(Arc::new(exec::NoGate));
    }
    let disrupted: usize = plan.rolling.iter().map(|wave| wave.vms.len()).sum();
    super::confirm::confirm(
        context,
        &format!(
            "restart, replace or remove {disrupted} running VMs of cluster {} in {} waves",
            plan.cluster,
            plan.rolling.len()
        ),
        "",
        up_args.confirm.yes,
    )?;
    super::up_phase2::rolling_gate(
        context,
        profile,
        &up_args.phase2,
        up_args.cluster.sim.simulate,
        guests,
        state,
    )
}

/// The plan's warnings and summary on stderr before anything changes; each VM's parameters only
/// with -v (`plan` shows them all).
fn show_plan(context: &Context, plan: &crate::plan::Plan) {
    for warning in &plan.warnings {
        context.reporter.status(&format!("warning: {warning}"));
    }
    if plan.is_noop() && plan.upgrade.is_none() {
        context
            .reporter
            .status("cluster already matches the profile: no changes made to Proxmox");
    } else {
        // Warnings were printed above; the parameters of each VM only with -v (`plan` shows
        // them all).
        let text = profile::diagnostic::neutralise_lines(&crate::plan::render_text(plan));
        let verbose = context.reporter.verbose() > 0;
        let shown: Vec<&str> = text
            .lines()
            .filter(|line| !line.starts_with("warning: "))
            .filter(|line| verbose || !line.starts_with("      "))
            .collect();
        context.reporter.status(&shown.join("\n"));
    }
}
