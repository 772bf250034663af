//! `up`, phase 2 glue: guests for simulated VMs (`--guests testbed`), whether phase 2 runs at all
//! (`--vms-only`, simulated VMs without guests), running it on the plan's VMs and reporting per node.

use std::sync::Arc;
use std::time::Duration;

use crate::cli::{Guests, OutputFormat, Phase2Args};
use anyhow::Context as _;

use crate::exec::cluster::{self, ClusterOptions};
use crate::exec::phase2::Phase2Report;
use crate::exec::session::Opened;
use crate::exec::{NoGate, ProvisionedVm, RollingGate};
use crate::profile::Profile;
use provision_testbed::TestbedGuests;

use super::Context;
use super::output::{Phase2Output, Phase2Summary};

/// Said when `--simulate` runs without guests.
pub const SKIPPED_SIMULATED: &str = "simulated VMs have no guests: phase 2 (SSH, k3s) skipped; add --guests testbed to run it on real test hosts";

/// How long the testbed may take to seed and boot the started VMs' hosts.
const TESTBED_SETTLE: Duration = Duration::from_secs(300);

/// Installs the testbed guest backend into the simulator before any VM starts or stops (`--guests
/// testbed`, on `up` and `down`).
pub fn attach_guests(
    opened: &Opened,
    guests: Guests,
) -> anyhow::Result<Option<Arc<TestbedGuests>>> {
    match (guests, &opened.simulator) {
        (Guests::Testbed, Some(simulator)) => {
            let guests = TestbedGuests::new()?;
            simulator.set_guest_backend(guests.clone());
            Ok(Some(guests))
        }
        (Guests::Testbed, None) | (Guests::None, _) => Ok(None),
    }
}

/// The testbed hosts of the VMs the state records, so that a VM restarted without its seed
/// (removed after its first boot) boots its host again and a destroyed one stops it.
pub fn remember_guests(
    guests: Option<&TestbedGuests>,
    state: &crate::state::State,
) -> anyhow::Result<()> {
    let Some(guests) = guests else {
        return Ok(());
    };
    for vm in state.vms.values() {
        let Some(address) = &vm.address else {
            continue;
        };
        let address: std::net::IpAddr = address
            .parse()
            .with_context(|| format!("VM {}: address {address:?} in the state", vm.name))?;
        guests.remember(vm.vmid, address)?;
    }
    Ok(())
}

/// What `up` asks around each disruption of a running VM: the k3s gate (drain, wait Ready,
/// uncordon) once phase 2 has bootstrapped the cluster and would run now, else nothing.
pub fn rolling_gate(
    context: &Context,
    profile: &Profile,
    args: &Phase2Args,
    simulate: bool,
    guests: Option<&TestbedGuests>,
    state: &crate::state::State,
) -> anyhow::Result<Arc<dyn RollingGate>> {
    let skipped = args.vms_only || (simulate && guests.is_none());
    if skipped || !context.workspace.kubeconfig_path().exists() {
        return Ok(Arc::new(NoGate));
    }
    let mut vms = Vec::new();
    for record in state.vms.values() {
        let Some(address) = &record.address else {
            continue;
        };
        vms.push(ProvisionedVm {
            name: record.name.clone(),
            vmid: record.vmid,
            node: record.node.clone(),
            address: address
                .parse()
                .with_context(|| format!("VM {}: address {address:?} in the state", record.name))?,
            role: record.role,
            group: record.group.clone(),
            gpus: record.gpus.clone(),
            seconds: 0.0,
        });
    }
    let options = ClusterOptions {
        accept_new_host_keys: args.accept_new_host_keys,
        ..ClusterOptions::default()
    };
    Ok(Arc::new(cluster::rolling_gate(
        profile,
        &vms,
        &context.workspace,
        &options,
    )?))
}

/// What phase 2 produced for the command's output.
pub enum Phase2Result {
    /// Phase 2 did not run, and why.
    Skipped(&'static str),
    Done {
        report: Box<Phase2Report>,
        /// Every remote operation, with `--print-commands`.
        commands: Option<Vec<String>>,
        /// `--guests testbed`: how long the test hosts took to be seeded and booted.
        testbed_boot: Option<Duration>,
    },
}

impl Phase2Result {
    /// The `phase2` part of `up`'s output.
    pub fn output(&self) -> Phase2Output<'_> {
        match self {
            Phase2Result::Skipped(reason) => Phase2Output::Skipped { skipped: reason },
            Phase2Result::Done {
                report,
                commands,
                testbed_boot,
            } => Phase2Output::Done(Box::new(
                Phase2Summary::new(report, commands.as_deref()).with_testbed_boot(*testbed_boot),
            )),
        }
    }
}

/// Runs phase 2 unless it is skipped; prints the per-node report (text) and, with `--print-commands`,
/// every remote operation. Returns the report for the JSON output.
pub async fn run(
    context: &Context,
    profile: &Profile,
    args: &Phase2Args,
    simulate: bool,
    guests: Option<&TestbedGuests>,
    vms: &[ProvisionedVm],
    upgrade: Option<crate::exec::phase2::UpgradeOptions>,
) -> anyhow::Result<Phase2Result> {
    if args.vms_only {
        context
            .reporter
            .status("--vms-only: phase 2 (SSH, k3s) not run");
        return Ok(Phase2Result::Skipped("--vms-only"));
    }
    if simulate && guests.is_none() {
        context.reporter.status(SKIPPED_SIMULATED);
        return Ok(Phase2Result::Skipped("simulated VMs have no guests"));
    }
    if !cluster::has_server(vms) {
        anyhow::bail!("the plan has no server VM: phase 2 cannot install k3s");
    }
    let testbed_boot = guests.map(|_| std::time::Instant::now());
    if let Some(guests) = guests {
        for line in guests.settle(TESTBED_SETTLE)? {
            context.reporter.detail(&format!("testbed: {line}"));
        }
        let addresses: Vec<_> = vms.iter().map(|vm| vm.address).collect();
        for host in guests.ensure_running(&addresses)? {
            context.reporter.status(&format!(
                "testbed: {host} was down although its simulated VM runs (crashed?): booted it again"
            ));
        }
    }
    let testbed_boot = testbed_boot.map(|started| started.elapsed());
    context.reporter.status(&format!(
        "phase 2: preparing {} nodes and installing k3s over SSH",
        vms.len()
    ));
    let options = ClusterOptions {
        accept_new_host_keys: args.accept_new_host_keys,
        record_commands: args.print_commands,
        events: crate::exec::Events(std::sync::Arc::new(context.reporter.clone())),
        upgrade,
        ..ClusterOptions::default()
    };
    let outcome = cluster::converge(profile, vms, &context.workspace, &options).await;
    let commands = match &outcome {
        Ok(done) => &done.commands,
        Err(failure) => &failure.commands,
    };
    if args.print_commands && context.reporter.format() == OutputFormat::Text {
        for command in commands {
            context.reporter.status(command);
        }
    }
    let done = outcome.map_err(|failure| failure.error.context("phase 2 (SSH, k3s)"))?;
    if context.reporter.format() == OutputFormat::Text {
        context
            .reporter
            .data(&Phase2Summary::new(&done.report, None).to_string());
    }
    Ok(Phase2Result::Done {
        report: Box::new(done.report),
        commands: args.print_commands.then_some(done.commands),
        testbed_boot,
    })
}
