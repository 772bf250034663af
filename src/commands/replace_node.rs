//! `provision replace-node --profile P NODE [--yes]`: plan (the same plan `plan --replace-node`
//! prints), preflight and confirm, then run the steps one at a time under the state's journal:
//! snapshot, drain, stop k3s, etcd member removal, Node deletion ([`crate::exec::replace`]),
//! VM destroyed and created again (`down`'s and `up`'s executors), phase 2 (`up`'s), checks.
//! A re-run after a crash resumes at the journaled step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::cli::{OutputFormat, Phase2Args, ReplaceNodeArgs};
use crate::exec::replace::{ReplaceContext, begin_step, step_done};
use crate::exec::session::{self, Opened, WorkspaceSeeds};
use crate::exec::{self, ExecOptions, ProvisionedVm};
use crate::exit::ExitStatus;
use crate::k3s::drain::NodeName;
use crate::k3s::etcd::SnapshotName;
use crate::plan::{Intent, Plan};
use crate::profile::{self, Profile};
use crate::state::{ReplaceJournal, ReplaceStep, StateStore};

use provision_testbed::TestbedGuests;

use super::{Context, UserError};

/// What the command reports (stdout).
#[derive(Debug, Serialize)]
struct ReplaceOutput {
    node: String,
    role: &'static str,
    /// Seconds per step run by this invocation, in order.
    steps: Vec<(ReplaceStep, f64)>,
    snapshot: Option<String>,
    /// The node was dead (VM gone or unreachable): replaced without a drain.
    dead: bool,
    vmid: Option<u32>,
    etcd_members: usize,
    seconds: f64,
}

pub async fn run(context: &Context, args: ReplaceNodeArgs) -> anyhow::Result<ExitStatus> {
    let (loaded, context) = &super::scope::load_scoped(
        context,
        &args.cluster.profile,
        &args.cluster.overrides,
        false,
    )?;
    let name = NodeName::new(&args.node)?;
    let store = StateStore::open(
        &context.workspace.state_dir(),
        &format!("replace-node --profile {} {name}", args.cluster.profile),
    )?;
    store.state().check_cluster(&loaded.profile.cluster.name)?;
    let opened = session::open(
        &context.workspace,
        &loaded.profile,
        super::simulator(&args.cluster.sim).as_ref(),
    )
    .await?;
    let result = replace(context, &args, &loaded.profile, store, &opened, &name).await;
    opened.close().await;
    let output = result?;
    match context.reporter.format() {
        OutputFormat::Json => context.reporter.json(&output),
        OutputFormat::Text => context.reporter.data(&format!(
            "replaced {} ({}) in {:.0}s: {}{}",
            output.node,
            output.role,
            output.seconds,
            output
                .steps
                .iter()
                .map(|(step, seconds)| format!("{} {seconds:.0}s", step.as_str()))
                .collect::<Vec<_>>()
                .join(", "),
            if output.etcd_members > 0 {
                format!("; etcd: {} voting members", output.etcd_members)
            } else {
                String::new()
            }
        )),
    }
    Ok(ExitStatus::Success)
}

async fn replace(
    context: &Context,
    args: &ReplaceNodeArgs,
    profile: &Profile,
    mut store: StateStore,
    opened: &Opened,
    name: &NodeName,
) -> anyhow::Result<ReplaceOutput> {
    let started = Instant::now();
    let simulate = args.cluster.sim.simulate;
    let phase2 = Phase2Args {
        vms_only: false,
        guests: args.guests,
        accept_new_host_keys: args.accept_new_host_keys,
        print_commands: false,
    };
    let guests = super::up_phase2::attach_guests(opened, args.guests)?;
    if simulate && guests.is_none() {
        return Err(UserError::new(
            "replace-node works on the cluster's nodes over SSH; simulated VMs have no guests",
            Some("add --guests testbed (a test facility), or preview with `plan --replace-node`"),
        )
        .into());
    }
    if let Some(guests) = &guests {
        for vm in store.state().vms.values() {
            if let Some(address) = vm.address.as_deref().and_then(|a| a.parse().ok()) {
                guests.remember(vm.vmid, address)?;
            }
        }
    }
    let seeds = Arc::new(WorkspaceSeeds::for_run(
        profile,
        &context.workspace,
        simulate,
    )?);
    let plan = replace_plan(context, profile, &store, opened, &seeds, name).await?;
    let Some(summary) = plan.replace.clone() else {
        bail!("internal: a replace-node plan without its steps");
    };
    let timeout = Duration::from_secs(args.timeout);
    let (nodes, connector) = exec::drain::open_cluster(profile, &context.workspace, timeout)?;
    let Some(node) = nodes.iter().find(|node| node.name == name.as_str()) else {
        bail!("internal: {name} is in the plan but not among the cluster's nodes");
    };
    let k3s = ReplaceContext {
        connector: &connector,
        nodes: &nodes,
        node,
        name: name.clone(),
        timeout,
        poll: Duration::from_secs(2),
    };
    let text = profile::diagnostic::neutralise_lines(&crate::plan::render_text(&plan));
    context.reporter.status(text.trim_end());
    start_or_resume(context, args, &mut store, &plan, &k3s).await?;
    let run = Run {
        context,
        profile,
        opened,
        seeds,
        phase2,
        guests,
        poll_scale: if simulate {
            args.cluster.sim.sim_time_scale
        } else {
            1.0
        },
    };
    let mut steps = Vec::new();
    let mut members = 0;
    for step in &summary.steps {
        let step_started = Instant::now();
        begin_step(&mut store, *step)?;
        context
            .reporter
            .status(&format!("replace-node {name}: {}", step.as_str()));
        store = run_step(&run, store, &k3s, *step)
            .await
            .with_context(|| {
                format!(
                    "replace-node {name}: step {} (the state remembers it: run the same command again to resume)",
                    step.as_str()
                )
            })?;
        if *step == ReplaceStep::Verify {
            members = k3s
                .verify(profile_servers(profile), gpu_node(profile, name))
                .await?
                .members;
        }
        step_done(*step);
        steps.push((*step, step_started.elapsed().as_secs_f64()));
    }
    let journal = store.state().replacing.clone();
    let snapshot = journal
        .as_ref()
        .and_then(|journal| journal.snapshot.clone());
    store.update(|state| state.replacing = None)?;
    Ok(ReplaceOutput {
        node: name.to_string(),
        role: summary.role.as_str(),
        steps,
        snapshot,
        dead: journal.is_some_and(|journal| journal.dead),
        vmid: store.state().vms.get(name.as_str()).map(|vm| vm.vmid),
        etcd_members: members,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `up` stops while a replacement is unfinished: only `replace-node` knows how to finish it.
pub fn refuse_unfinished(state: &crate::state::State, profile: &str) -> anyhow::Result<()> {
    let Some(journal) = &state.replacing else {
        return Ok(());
    };
    Err(UserError::new(
        format!(
            "the replacement of {} is unfinished (it stopped at step {}); nothing was changed",
            journal.node,
            journal.step.as_str()
        ),
        Some(&format!(
            "run `provision replace-node --profile {profile} {}` again to finish it, then `up`",
            journal.node
        )),
    )
    .into())
}

/// A new replacement: the preflight (refusing with nothing changed), the confirmation, then
/// the journal. An unfinished one: the confirmation to resume it.
async fn start_or_resume(
    context: &Context,
    args: &ReplaceNodeArgs,
    store: &mut StateStore,
    plan: &Plan,
    k3s: &ReplaceContext<'_>,
) -> anyhow::Result<()> {
    let name = &k3s.name;
    let Some(summary) = &plan.replace else {
        bail!("internal: a replace-node plan without its steps");
    };
    match store.state().replacing.clone() {
        Some(journal) => {
            super::confirm::confirm(
                context,
                &format!(
                    "resume replacing {name} (an earlier run stopped at step {})",
                    journal.step.as_str()
                ),
                "",
                args.confirm.yes,
            )?;
        }
        None => {
            // Present on Proxmox; whether it answers is the preflight's SSH probe.
            let vm_present = summary.vmid.is_some_and(|vmid| vm_replaced(plan, vmid));
            let preflight = k3s.preflight(store.state(), vm_present).await?;
            if let Some(why) = &preflight.dead {
                context.reporter.status(&format!(
                    "{name} is dead ({why}): no drain, no k3s stop on it; the quorum rules still hold"
                ));
            }
            let what = match &preflight.dead {
                Some(why) => format!(
                    "replace DEAD node {name} ({why}) without draining it: its VM is destroyed and created again"
                ),
                None => format!("drain {name}, destroy its VM and create it again"),
            };
            super::confirm::confirm(context, &what, "", args.confirm.yes)?;
            store.update(|state| {
                state.replacing = Some(ReplaceJournal {
                    node: name.to_string(),
                    role: summary.role,
                    step: summary
                        .steps
                        .first()
                        .copied()
                        .unwrap_or(ReplaceStep::Verify),
                    dead: preflight.dead.is_some(),
                    snapshot: None,
                });
            })?;
        }
    }
    Ok(())
}

/// Observe Proxmox and plan `replace-node NAME` (refusals are the planner's: unknown node,
/// other changes pending, another replacement unfinished).
async fn replace_plan(
    context: &Context,
    profile: &Profile,
    store: &StateStore,
    opened: &Opened,
    seeds: &WorkspaceSeeds,
    name: &NodeName,
) -> anyhow::Result<Plan> {
    let (_inventory, plan) = session::observe_and_plan_intent(
        opened.connection.api.as_ref(),
        opened.connection.auth.clone(),
        profile,
        store.state(),
        seeds,
        &context.workspace.root,
        crate::plan::RollingOptions::default(),
        &Intent::ReplaceNode {
            node: name.to_string(),
        },
    )
    .await?;
    Ok(plan)
}

/// The plan's VM action is a replace of a VM Proxmox shows (a create means it is gone).
fn vm_replaced(plan: &Plan, vmid: u32) -> bool {
    plan.actions.iter().any(|action| {
        action.kind() == crate::plan::ActionKind::Replace && action.target().vmid.0 == vmid
    })
}

fn profile_servers(profile: &Profile) -> usize {
    profile
        .nodes()
        .iter()
        .filter(|node| node.role == crate::profile::model::Role::Server)
        .count()
}

fn gpu_node(profile: &Profile, name: &NodeName) -> bool {
    profile
        .nodes()
        .iter()
        .find(|node| node.name == name.as_str())
        .and_then(|node| {
            profile
                .node_groups
                .iter()
                .find(|group| group.name == node.group)
        })
        .and_then(|group| group.gpus.as_ref())
        .is_some_and(|gpus| gpus.count > 0)
}

/// What every step may need besides the state.
struct Run<'a> {
    context: &'a Context,
    profile: &'a Profile,
    opened: &'a Opened,
    seeds: Arc<WorkspaceSeeds>,
    phase2: Phase2Args,
    guests: Option<Arc<TestbedGuests>>,
    /// `up`'s polling scale (the simulator's time scale under `--simulate`).
    poll_scale: f64,
}

/// One step; the VM steps hand the state store to `down`'s and `up`'s executors and get it
/// back.
async fn run_step(
    run: &Run<'_>,
    mut store: StateStore,
    k3s: &ReplaceContext<'_>,
    step: ReplaceStep,
) -> anyhow::Result<StateStore> {
    let Run {
        context,
        profile,
        opened,
        ..
    } = *run;
    let dead = store
        .state()
        .replacing
        .as_ref()
        .is_some_and(|journal| journal.dead);
    match step {
        ReplaceStep::Snapshot => {
            let name = match store
                .state()
                .replacing
                .as_ref()
                .and_then(|j| j.snapshot.clone())
            {
                Some(name) => name,
                None => {
                    let unix = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|elapsed| elapsed.as_secs())
                        .unwrap_or_default();
                    let name = format!("provision-replace-{unix}");
                    store.update(|state| {
                        if let Some(journal) = state.replacing.as_mut() {
                            journal.snapshot = Some(name.clone());
                        }
                    })?;
                    name
                }
            };
            let snapshot = k3s.snapshot(&SnapshotName::new(&name)?).await?;
            context.reporter.detail(&format!(
                "etcd snapshot {} ({} bytes) at {}",
                snapshot.name, snapshot.size, snapshot.location
            ));
        }
        ReplaceStep::Drain if !dead => {
            k3s.drain().await?;
        }
        ReplaceStep::StopK3s if !dead => {
            k3s.stop_k3s().await?;
        }
        ReplaceStep::Drain | ReplaceStep::StopK3s => {}
        ReplaceStep::RemoveMember => k3s.remove_member().await?,
        ReplaceStep::DeleteNode => k3s.delete_node().await?,
        ReplaceStep::DestroyVm => {
            store = destroy_vm(run, store, k3s).await?;
            settle_guests(run)?;
        }
        ReplaceStep::CreateVm => {
            store = create_vm(run, store).await?;
            settle_guests(run)?;
        }
        ReplaceStep::Join => {
            let vms = provisioned(store.state())?;
            super::up_phase2::run(
                context,
                profile,
                &run.phase2,
                opened.simulator.is_some(),
                run.guests.as_deref(),
                &vms,
                // A replacement joins at the cluster's version; upgrades are `up`'s.
                None,
            )
            .await?;
        }
        ReplaceStep::Verify => {}
    }
    Ok(store)
}

/// With `--guests testbed`, wait until the test hosts have followed the VM (stopped, or seeded
/// and booted), as a real VM's power state does not depend on the client that changed it.
fn settle_guests(run: &Run<'_>) -> anyhow::Result<()> {
    if let Some(guests) = &run.guests {
        for line in guests.settle(Duration::from_secs(300))? {
            run.context.reporter.detail(&format!("testbed: {line}"));
        }
    }
    Ok(())
}

/// Stop and purge the node's VM (`down`'s plan, cut to this VM); a VM already gone is only
/// forgotten.
async fn destroy_vm(
    run: &Run<'_>,
    store: StateStore,
    k3s: &ReplaceContext<'_>,
) -> anyhow::Result<StateStore> {
    let Run {
        context,
        profile,
        opened,
        ..
    } = *run;
    let (_inventory, mut plan) = exec::observe_and_plan_down(
        opened.connection.api.as_ref(),
        opened.connection.auth.clone(),
        profile,
        store.state(),
    )
    .await?;
    plan.actions.retain(|action| action.vm() == k3s.node.name);
    plan.forget.retain(|forget| forget.vm == k3s.node.name);
    let (_report, store) = exec::destroy(
        Arc::clone(&opened.connection.api),
        &plan,
        store,
        Arc::new(context.reporter.clone()),
        ExecOptions::default(),
    )
    .await?;
    Ok(store)
}

/// Create the node's VM again from the profile: `up`'s converge plan, which may hold nothing
/// else.
async fn create_vm(run: &Run<'_>, store: StateStore) -> anyhow::Result<StateStore> {
    let Run {
        context,
        profile,
        opened,
        ..
    } = *run;
    let seeds = &run.seeds;
    let (_inventory, plan) = session::observe_and_plan(
        opened.connection.api.as_ref(),
        opened.connection.auth.clone(),
        profile,
        store.state(),
        seeds,
        &context.workspace.root,
        crate::plan::RollingOptions::default(),
    )
    .await?;
    let journal = store.state().replacing.clone();
    let node = journal
        .as_ref()
        .map(|j| j.node.as_str())
        .unwrap_or_default();
    if let Some(other) = plan.actions.iter().find(|action| action.vm() != node) {
        bail!(
            "the plan to create {node} again also changes {}: the profile changed during the replacement; \
             put it back, finish with `replace-node`, then `up`",
            other.vm()
        );
    }
    let (_report, store) = exec::apply(
        Arc::clone(&opened.connection.api),
        &plan,
        store,
        Arc::clone(seeds) as Arc<dyn exec::SeedSource>,
        Arc::new(context.reporter.clone()),
        ExecOptions {
            poll_scale: run.poll_scale,
            ..ExecOptions::default()
        },
    )
    .await?;
    Ok(store)
}

/// The state's VMs as phase 2 takes them.
fn provisioned(state: &crate::state::State) -> anyhow::Result<Vec<ProvisionedVm>> {
    state
        .vms
        .values()
        .filter_map(|record| record.address.as_ref().map(|address| (record, address)))
        .map(|(record, address)| {
            Ok(ProvisionedVm {
                name: record.name.clone(),
                vmid: record.vmid,
                node: record.node.clone(),
                address: address.parse().with_context(|| {
                    format!("VM {}: address {address:?} in the state", record.name)
                })?,
                role: record.role,
                group: record.group.clone(),
                gpus: record.gpus.clone(),
                seconds: 0.0,
            })
        })
        .collect()
}
