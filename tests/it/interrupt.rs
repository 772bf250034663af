//! Ctrl-C and SIGTERM during `provision up`: at seeded random moments of a slowed simulated run,
//! the binary exits 130 with the line that says how to continue, its state file stays valid, and
//! a re-run converges with every VM on (simulated) Proxmox exactly once and in the state.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use rustix::process::{Pid, Signal, kill_process};

use crate::support::cli::BinaryWorkspace;

/// Slow enough that a run lasts a few seconds, so a signal lands in the middle of it.
const UP: [&str; 8] = [
    "up",
    "--profile",
    "homelab-ha",
    "--simulate",
    "--sim-time-scale",
    "0.05",
    "--yes",
    "--no-color",
];

const CONTINUE: &str =
    "interrupted: re-run `provision up --profile homelab-ha --simulate` to continue";

/// Starts `up`, waits until it works on the VMs (its first change), sends `signals` (each after
/// its delay), and returns exit code and stderr.
fn up_with_signals(binary: &BinaryWorkspace, signals: &[(Duration, Signal)]) -> (i32, String) {
    use std::io::BufRead as _;
    let mut command = binary.provision(&UP).command();
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let pid = Pid::from_child(&child);
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    // Signals before the run starts changing things end it at once; the moments measure from here.
    while let Ok(line) = received.recv_timeout(Duration::from_secs(120)) {
        let started = line.starts_with("working on");
        seen.push(line);
        if started {
            break;
        }
    }
    for (delay, signal) in signals {
        std::thread::sleep(*delay);
        // The process may have finished already: then there is nobody to signal.
        if kill_process(pid, *signal).is_err() {
            break;
        }
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    seen.extend(received.try_iter());
    (status.code().unwrap_or(-1), seen.join("\n"))
}

/// Names of the VMs the workspace's simulated Proxmox holds, with how often each occurs.
fn simulated_vms(binary: &BinaryWorkspace) -> BTreeMap<String, usize> {
    let text =
        std::fs::read_to_string(binary.workspace().join(".provision/sim/state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut names = BTreeMap::new();
    for vm in state["vms"].as_object().unwrap().values() {
        let name = vm["config"]["name"].as_str().unwrap().to_owned();
        *names.entry(name).or_insert(0) += 1;
    }
    names
}

/// The VMs the workspace state records, read as the state file is (it must parse).
fn recorded_vms(binary: &BinaryWorkspace) -> BTreeSet<String> {
    let text = std::fs::read_to_string(binary.workspace().join(".provision/state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["vms"].as_object().unwrap().keys().cloned().collect()
}

/// After an interrupted run: the state parses, a re-run converges, a third run (and `plan
/// --detailed-exitcode`) sees nothing to do, and Proxmox holds each planned VM exactly once.
fn assert_rerun_converges(binary: &BinaryWorkspace, label: &str) {
    recorded_vms(binary);
    let (code, _, stderr) = binary.run(&UP);
    assert_eq!(code, 0, "{label}: re-run: {stderr}");
    let (code, stdout, stderr) = binary.run(&[
        "plan",
        "--profile",
        "homelab-ha",
        "--simulate",
        "--detailed-exitcode",
    ]);
    assert_eq!(code, 0, "{label}: plan after the re-run: {stdout}{stderr}");
    let on_proxmox = simulated_vms(binary);
    assert!(
        on_proxmox.values().all(|count| *count == 1),
        "{label}: duplicated VMs {on_proxmox:?}"
    );
    let names: BTreeSet<String> = on_proxmox.keys().cloned().collect();
    assert_eq!(names.len(), 5, "{label}: {names:?}");
    assert_eq!(names, recorded_vms(binary), "{label}: orphaned VMs");
}

#[test]
fn an_interrupt_at_random_moments_exits_130_and_a_rerun_converges() {
    // Seeded: the moments are random but the same on every run of the test. Each falls into
    // its own slice of the first seconds after the run starts changing Proxmox, so they spread
    // over the whole run.
    let mut random = rand::rngs::StdRng::seed_from_u64(11);
    let mut interrupted = 0;
    for point in 0..7u64 {
        let delay = Duration::from_millis(point * 400 + random.random_range(0..400));
        let signal = if point % 2 == 0 {
            Signal::INT
        } else {
            Signal::TERM
        };
        let label = format!("point {point} ({signal:?} after {delay:?})");
        let binary = BinaryWorkspace::new();
        let (code, stderr) = up_with_signals(&binary, &[(delay, signal)]);
        eprintln!("{label}: exit {code}");
        match code {
            130 => {
                interrupted += 1;
                assert!(stderr.contains(CONTINUE), "{label}: {stderr}");
                assert!(stderr.contains("starting no new step"), "{label}: {stderr}");
                assert!(!stderr.contains("error:"), "{label}: {stderr}");
            }
            // The run finished before the signal came: it is still a valid point for the rest.
            0 => {}
            other => panic!("{label}: exit {other}: {stderr}"),
        }
        assert_rerun_converges(&binary, &label);
    }
    assert!(
        interrupted >= 5,
        "only {interrupted} of 7 runs were interrupted"
    );
}

#[test]
fn a_second_interrupt_exits_at_once_and_a_rerun_still_converges() {
    let binary = BinaryWorkspace::new();
    let (code, stderr) = up_with_signals(
        &binary,
        &[
            (Duration::from_millis(300), Signal::INT),
            (Duration::from_millis(20), Signal::INT),
        ],
    );
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains("interrupted again: exiting now"),
        "{stderr}"
    );
    assert_rerun_converges(&binary, "second interrupt");
}

/// Fires the interrupt once the first wave's VM is back, while the later waves wait for it:
/// the second wave then stops at its first step and the third waits for the second.
struct InterruptingGate(provision::exec::Interrupt);

#[async_trait::async_trait]
impl provision::exec::RollingGate for InterruptingGate {
    async fn before_disruption(&self, _vm: &provision::plan::WaveVm) -> anyhow::Result<()> {
        Ok(())
    }

    async fn after_recovery(&self, _vm: &provision::plan::WaveVm) -> anyhow::Result<()> {
        self.0.fire();
        Ok(())
    }
}

/// VMs waiting for an earlier wave (or for the VM they replace) stop too: an interrupted
/// rolling change ends with `Interrupted` instead of waiting forever for a wave that will not
/// finish, and a re-run completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_during_a_rolling_change_ends_the_waiting_waves() {
    use crate::support::sim::{SimWorkspace, builtin, exec_options, fast};
    use provision::exec::{ExecOptions, Interrupt, is_interrupted};
    let mut profile = builtin("homelab-ha");
    let workspace = SimWorkspace::start(&profile, None, fast()).await;
    workspace.up(&profile, exec_options()).await.unwrap();
    let server = profile
        .node_groups
        .iter()
        .position(|group| group.role == provision::profile::model::Role::Server)
        .unwrap();
    profile.node_groups[server].cores += 2;
    let interrupt = Interrupt::new("provision up --profile homelab-ha");
    let run = workspace.up_rolling(
        &profile,
        ExecOptions {
            interrupt: Some(interrupt.clone()),
            ..exec_options()
        },
        provision::plan::RollingOptions::default(),
        std::sync::Arc::new(InterruptingGate(interrupt)),
    );
    let ended = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the waiting waves never stopped");
    let Err(error) = ended else {
        panic!("an interrupted rolling change succeeded");
    };
    assert!(is_interrupted(&error), "{error:#}");
    workspace.up(&profile, exec_options()).await.unwrap();
    let before = workspace.log().len();
    workspace.up(&profile, exec_options()).await.unwrap();
    assert_eq!(workspace.mutating_since(before), Vec::new());
    workspace.sim.shutdown().await;
}
