//! Phase 2's work on one node, each part timed on the node's timeline: reaching it (cloud-init
//! finished, what k3s state it holds), preparing it (node preparation, hardware
//! probe, the k3s binary and air-gap images) and installing k3s on it (config, unit, start).

use anyhow::{Context, anyhow, bail};

use super::timeline::{Clock, StepTiming};
use super::{GuestNode, Inputs, NodeReport, Phase2Options, run_checked};
use crate::k3s::BINARY_PATH;
use crate::k3s::cluster::{NodeProbe, parse_probe, probe_script};
use crate::k3s::config::{NodeSettings, render_config, render_unit, unit_name};
use crate::k3s::install::{
    ServiceAction, config_steps, parse_service_state, service_action, service_command,
    service_state_script,
};
use crate::k3s::manifests::storage_labels;
use crate::k3s::token::K3sToken;
use crate::nodeprep::{
    NodePrepInput, StepOutcome, StepReport, apply_step, apply_steps, ensure_file,
    hardware_probe_script, node_labels, parse_hardware, prepare_steps,
};
use crate::profile::Profile;
use crate::profile::model::{NodeGroup, Role};
use crate::ssh::RemoteExec;

/// Wait for cloud-init on a connected node, then probe what k3s state it holds (the join plan
/// needs every node's); both go on the node's timeline.
pub(super) async fn reach_node(
    node: &GuestNode,
    exec: &dyn RemoteExec,
    token: &K3sToken,
    clock: &Clock,
    opts: &Phase2Options,
    timeline: &mut Vec<StepTiming>,
) -> anyhow::Result<NodeProbe> {
    opts.events.step(&node.name, "cloud-init");
    clock
        .time(
            timeline,
            "cloud-init",
            wait_cloud_init(exec, opts.cloud_init_timeout),
        )
        .await?;
    let stdin = format!("{}\n", token.expose());
    let output = clock
        .time(
            timeline,
            "probe",
            exec.run(&probe_script(unit_name(node.role)), Some(stdin.as_bytes())),
        )
        .await?;
    Ok(parse_probe(&String::from_utf8_lossy(&output.stdout)))
}

/// A prepared node: its report so far (steps, labels, timeline) and whether its k3s binary changed.
pub(super) struct Prepared {
    pub report: NodeReport,
    pub binary_changed: bool,
}

/// Node preparation (one round trip for all its steps), the hardware probe that decides the
/// node's labels, then the k3s binary and the air-gap images.
pub(super) async fn prepare_node(
    profile: &Profile,
    node: &GuestNode,
    group: &NodeGroup,
    exec: &dyn RemoteExec,
    inputs: &Inputs,
    clock: &Clock,
    opts: &Phase2Options,
) -> anyhow::Result<Prepared> {
    let mut report = NodeReport {
        name: node.name.clone(),
        ..NodeReport::default()
    };
    opts.events.step(&node.name, "prepare");
    let steps = prepare_steps(
        &NodePrepInput::for_group(profile, group)
            .with_nvidia_repo_key(inputs.nvidia_repo_key.as_deref()),
    );
    let prepare = async {
        let applied = apply_steps(exec, &steps).await?;
        let hardware = parse_hardware(&run_checked(exec, &hardware_probe_script()).await?);
        anyhow::Ok((applied, hardware))
    };
    let (applied, hardware) = clock.time(&mut report.timeline, "prepare", prepare).await?;
    report.steps.extend(applied);
    report.labels = node_labels(group, &hardware, &profile.detect);
    report.labels.extend(storage_labels(profile, group));
    let upload = async {
        let mut uploaded = Vec::new();
        let outcome = ensure_file(exec, BINARY_PATH, &inputs.binary_bytes, 0o755).await?;
        uploaded.push(StepReport {
            description: format!("k3s binary {BINARY_PATH}"),
            outcome,
        });
        if let Some((path, bytes)) = &inputs.images {
            let outcome = ensure_file(exec, path, bytes, 0o644).await?;
            uploaded.push(StepReport {
                description: format!("air-gap images {path}"),
                outcome,
            });
        }
        anyhow::Ok(uploaded)
    };
    let uploaded = clock.time(&mut report.timeline, "upload", upload).await?;
    let binary_changed = uploaded[0].outcome.is_change();
    report.steps.extend(uploaded);
    Ok(Prepared {
        report,
        binary_changed,
    })
}

/// `cloud-init status --wait`, bounded. Exit 2 (finished with recoverable errors) is accepted; a host
/// without cloud-init (exit 127) was not created by provision and has nothing to wait for.
async fn wait_cloud_init(
    exec: &dyn RemoteExec,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let output = tokio::time::timeout(timeout, exec.run("cloud-init status --wait", None))
        .await
        .map_err(|_| {
            anyhow!(
                "{}: timed out after {}s waiting for cloud-init to finish (`cloud-init status --wait`)",
                exec.host(),
                timeout.as_secs()
            )
        })?
        .with_context(|| format!("{}: waiting for cloud-init to finish", exec.host()))?;
    match output.exit_status {
        0 | 2 | 127 => Ok(()),
        status => {
            // Which module failed and why: worth one more round trip on the way out.
            let detail = match exec.run("cloud-init status --long", None).await {
                Ok(long) => String::from_utf8_lossy(&long.stdout).trim().to_owned(),
                Err(error) => format!("(`cloud-init status --long` failed too: {error})"),
            };
            bail!(
                "{}: cloud-init failed (exit {status}): {}",
                exec.host(),
                if detail.is_empty() {
                    String::from_utf8_lossy(&output.stdout).trim().to_owned()
                } else {
                    detail
                }
            )
        }
    }
}

pub(super) struct InstallResult {
    pub steps: Vec<StepReport>,
    pub started: bool,
    pub restarted: bool,
}

/// Write config, env file, unit (and manifests on the bootstrap server), then start or restart k3s only
/// when something changed or it is not running.
pub(super) async fn install_node(
    profile: &Profile,
    settings: &NodeSettings,
    exec: &dyn RemoteExec,
    binary_changed: bool,
    extra_files: &[crate::nodeprep::Step],
    token: &K3sToken,
    opts: &Phase2Options,
) -> anyhow::Result<InstallResult> {
    opts.events.step(
        &settings.name,
        match settings.role {
            Role::Server => "k3s server",
            Role::Agent => "k3s agent",
        },
    );
    let config = render_config(&opts.templates, profile, settings, token)?;
    let unit = render_unit(&opts.templates, settings.role)?;
    let files = config_steps(settings.role, &config, &unit);
    let mut steps = Vec::new();
    let mut restart_needed = binary_changed;
    let mut unit_changed = false;
    // Not batched: config.yaml carries the token, and a batch script travels as a command line (visible
    // in the host's process list and in --print-commands); uploads keep it off command lines.
    for (position, step) in files.iter().enumerate() {
        let outcome = apply_step(exec, step).await?;
        restart_needed |= outcome.is_change();
        // The unit is the last of config_steps.
        unit_changed |= position == files.len() - 1 && outcome.is_change();
        steps.push(StepReport {
            description: step.description().to_owned(),
            outcome,
        });
    }
    // Manifests are picked up by the running server: no restart for them.
    for step in extra_files {
        let outcome = apply_step(exec, step).await?;
        steps.push(StepReport {
            description: step.description().to_owned(),
            outcome,
        });
    }
    let (active, _enabled) =
        parse_service_state(&run_checked(exec, &service_state_script(settings.role)).await?);
    let action = service_action(active, restart_needed);
    if let Some(command) = service_command(settings.role, action, unit_changed) {
        run_checked(exec, &command).await?;
    }
    let (started, restarted) = match action {
        ServiceAction::None => (false, false),
        ServiceAction::Start => (true, false),
        ServiceAction::Restart => (false, true),
    };
    if started || restarted {
        steps.push(StepReport {
            description: format!(
                "{} {}",
                unit_name(settings.role),
                if started { "started" } else { "restarted" }
            ),
            outcome: StepOutcome::Changed,
        });
    }
    Ok(InstallResult {
        steps,
        started,
        restarted,
    })
}
