//! `provision down --profile P [--yes]`: plan the teardown (`plan --destroy` shows it), hard stop
//! and purge the cluster's VMs (and, with `--simulate --guests testbed`, stop the testbed hosts
//! that played them). Without a state (a CI runner that lost `.provision/`), the VMs the
//! cluster's tags find on Proxmox, recorded in the state before anything is destroyed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::{DownArgs, OutputFormat};
use crate::exec::{self, ExecOptions, session};
use crate::exit::ExitStatus;
use crate::state::StateStore;

use super::Context;

/// How long the testbed may take to stop the destroyed VMs' hosts.
const GUESTS_SETTLE: Duration = Duration::from_secs(120);

pub async fn run(context: &Context, args: DownArgs) -> anyhow::Result<ExitStatus> {
    let signals = super::interrupt::install(&context.reporter, "down", &args.cluster)?;
    let (loaded, context) = &super::scope::load_scoped(
        context,
        &args.cluster.profile,
        &args.cluster.overrides,
        true,
    )?;
    let cluster = loaded.profile.cluster.name.clone();
    let store = StateStore::open(
        &context.workspace.state_dir(),
        &format!("down --profile {}", args.cluster.profile),
    )?;
    store.state().check_cluster(&cluster)?;
    let by_tag = store.state().vms.is_empty();
    let opened = session::open(
        &context.workspace,
        &loaded.profile,
        super::simulator(&args.cluster.sim).as_ref(),
    )
    .await?;
    // The same plan `plan --destroy` prints; without a state, the VMs the tags find.
    let planned = exec::observe_and_plan_down(
        opened.connection.api.as_ref(),
        opened.connection.auth.clone(),
        &loaded.profile,
        store.state(),
    )
    .await;
    let plan = match planned {
        Ok((_inventory, plan)) => plan,
        Err(error) => {
            opened.close().await;
            return Err(error);
        }
    };
    let names: Vec<String> = plan.actions.iter().map(|a| a.vm().to_owned()).collect();
    if names.is_empty() && plan.forget.is_empty() && plan.templates.is_empty() {
        opened.close().await;
        context.reporter.status(&format!(
            "no VMs of cluster {cluster} in the state nor tagged for it on Proxmox: nothing to destroy"
        ));
        return Ok(ExitStatus::Success);
    }
    let found = if by_tag {
        context.reporter.status(&format!(
            "no state for cluster {cluster}: found {} of its VMs{} on Proxmox by their tags",
            names.len(),
            match plan.templates.len() {
                0 => String::new(),
                1 => " and its template".to_owned(),
                count => format!(" and its {count} templates"),
            }
        ));
        " (no state: found on Proxmox by the cluster's tags)"
    } else {
        ""
    };
    if let Err(error) = super::confirm::confirm(
        context,
        &format!(
            "hard-stop and purge {} VMs of cluster {cluster}{found}",
            names.len()
        ),
        &format!("VMs: {}", names.join(", ")),
        args.confirm.yes,
    ) {
        opened.close().await;
        return Err(error);
    }
    let guests = super::up_phase2::attach_guests(&opened, args.guests)?;
    if let Some(guests) = &guests {
        for vm in store.state().vms.values() {
            let Some(address) = &vm.address else {
                continue;
            };
            let address: std::net::IpAddr = address
                .parse()
                .with_context(|| format!("VM {}: address {address:?} in the state", vm.name))?;
            guests.remember(vm.vmid, address)?;
        }
    }
    let mut store = store;
    if by_tag {
        // Recorded first: a crash from here on leaves a state `down` resumes from, and each
        // VM's seed ISO is removed with it.
        exec::reap::record_found(opened.connection.api.as_ref(), &plan, &mut store).await?;
    }
    let interrupt = signals.arm();
    let (report, _store) = exec::destroy(
        Arc::clone(&opened.connection.api),
        &plan,
        store,
        Arc::new(context.reporter.clone()),
        ExecOptions {
            interrupt: Some(interrupt),
            ..ExecOptions::default()
        },
    )
    .await?;
    if let Some(guests) = &guests {
        for line in guests.settle(GUESTS_SETTLE)? {
            context.reporter.status(&format!("testbed: {line}"));
        }
    }
    match context.reporter.format() {
        OutputFormat::Json => context.reporter.json(&serde_json::to_value(&report)?),
        OutputFormat::Text => context.reporter.data(&format!(
            "destroyed {} VMs, forgot {} already gone ({} mutating requests)",
            report.destroyed.len(),
            report.forgotten.len(),
            report.mutating_calls
        )),
    }
    opened.close().await;
    Ok(ExitStatus::Success)
}
