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
    let signals = super::interrupt::install(&context.reporter, "up", args)?;
    let (loaded, context) =
        &super::scope::load_scoped(context, &args.profile, &args.overrides, true)?;
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
    let seeds = Arc::new(session::WorkspaceSeeds::for_run(
        profile,
        &context.workspace,
        args.sim.simulate,
    )?);
    store.state().check_cluster(&profile.cluster.name)?;
    super::replace_node::refuse_unfinished(store.state(), &args.profile)?;
    let run = PhaseOne {
        up_args: &up_args,
        profile,
        opened: &opened,
        guests: guests.as_deref(),
        seeds: &seeds,
        signals: &signals,
    };
    let (plan, report, mut store, interrupt) = match phase_one(context, &run, store).await {
        Ok(applied) => applied,
        Err(error) => {
            opened.close().await;
            return Err(error);
        }
    };
    let phase1 = PhaseOneOutput {
        cluster: &profile.cluster.name,
        vms: &report.vms,
        destroyed: &report.destroyed,
        mutating_calls: report.mutating_calls,
        seconds: report.seconds,
    };
    if context.reporter.format() == OutputFormat::Text {
        context.reporter.data(&phase1.to_string());
    }
    // Phase 2's steps are idempotent commands over SSH: an interrupt drops the one running.
    let phase2 = tokio::select! {
        phase2 = phase_two(
            context,
            &up_args,
            profile,
            guests.as_deref(),
            (&plan, &report),
            &mut store,
        ) => phase2,
        () = interrupt.fired() => Err(interrupt.interrupted().into()),
    };
    opened.close().await;
    let phase2 = phase2?;
    if context.reporter.format() == OutputFormat::Json {
        context.reporter.json(&UpOutput {
            phase1,
            phase2: phase2.output(),
        });
    }
    Ok(ExitStatus::Success)
}

/// What phase 1 works with.
#[derive(Clone, Copy)]
struct PhaseOne<'a> {
    up_args: &'a UpArgs,
    profile: &'a crate::profile::Profile,
    opened: &'a session::Opened,
    guests: Option<&'a provision_testbed::TestbedGuests>,
    seeds: &'a Arc<session::WorkspaceSeeds>,
    signals: &'a super::interrupt::Signals,
}

/// The run's options: polling at the simulator's pace under `--simulate`, stopping on Ctrl-C.
fn exec_options(sim: &crate::cli::SimArgs, interrupt: &crate::exec::Interrupt) -> ExecOptions {
    ExecOptions {
        poll_scale: if sim.simulate {
            sim.sim_time_scale
        } else {
            1.0
        },
        interrupt: Some(interrupt.clone()),
        ..ExecOptions::default()
    }
}

/// Attempts of phase 1 when clusters created side by side take what a plan picked.
const RACE_ATTEMPTS: u32 = 6;

/// Preflight, plan and phase 1. Planned again (up to [`RACE_ATTEMPTS`] times, after a
/// jittered pause) when a cluster created at the same time took a VMID or address this plan
/// picked (`exec::race`): the next plan sees that cluster's VMs and skips what they use.
async fn phase_one(
    context: &Context,
    run: &PhaseOne<'_>,
    mut store: StateStore,
) -> anyhow::Result<(
    crate::plan::Plan,
    exec::ApplyReport,
    StateStore,
    exec::Interrupt,
)> {
    let PhaseOne {
        up_args,
        profile,
        opened,
        guests,
        seeds,
        signals,
    } = *run;
    let args = &up_args.cluster;
    let mut attempt = 1;
    loop {
        let plan = preflight(context, up_args, profile, &store, opened, seeds).await?;
        let gate = disruption_gate(context, up_args, profile, &plan, guests, store.state())?;
        let interrupt = signals.arm();
        let applied = exec::apply_with_gate(
            Arc::clone(&opened.connection.api),
            &plan,
            store,
            Arc::clone(seeds) as Arc<dyn exec::SeedSource>,
            Arc::new(context.reporter.clone()),
            exec_options(&args.sim, &interrupt),
            gate,
        )
        .await;
        match applied {
            Ok((report, store)) => return Ok((plan, report, store, interrupt)),
            Err(error) if exec::race::is_race(&error) && attempt < RACE_ATTEMPTS => {
                context
                    .reporter
                    .status(&format!("warning: {error:#}; planning again"));
                // Jittered, so two runs that both gave up do not plan in step again.
                let unit = if args.sim.simulate {
                    20.0 * args.sim.sim_time_scale
                } else {
                    5.0
                };
                let pause = (0.5 + rand::random::<f64>()) * f64::from(attempt) * unit;
                tokio::time::sleep(std::time::Duration::from_secs_f64(pause)).await;
                attempt += 1;
                store = StateStore::open(
                    &context.workspace.state_dir(),
                    &format!("up --profile {}", args.profile),
                )?;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Everything is validated here (profile, credentials and privileges, storages, bridge, GPUs,
/// hugepages, IOMMU, root-only keys) before the first mutating call: the same checks as
/// `provision doctor`. Returns the plan.
async fn preflight(
    context: &Context,
    up_args: &UpArgs,
    profile: &crate::profile::Profile,
    store: &StateStore,
    opened: &session::Opened,
    seeds: &session::WorkspaceSeeds,
) -> anyhow::Result<crate::plan::Plan> {
    let preflight = doctor::run(
        opened.connection.api.as_ref(),
        &opened.connection.auth,
        &DoctorInput {
            profile,
            state: store.state(),
            seeds,
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
    match preflight.observed {
        Some((_inventory, plan)) if !preflight.blocks() => Ok(plan),
        _ => Err(UserError::new(
            format!(
                "the preflight found what would stop `up`; nothing was changed on Proxmox:\n{}",
                preflight.failures()
            ),
            Some("`provision doctor --profile P` shows every check"),
        )
        .into()),
    }
}

/// Phase 2 on the plan's VMs, with the k3s upgrade of a running cluster first; the version it
/// converged to is recorded in the state.
async fn phase_two(
    context: &Context,
    up_args: &UpArgs,
    profile: &crate::profile::Profile,
    guests: Option<&provision_testbed::TestbedGuests>,
    (plan, report): (&crate::plan::Plan, &exec::ApplyReport),
    store: &mut StateStore,
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
    .await?;
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
