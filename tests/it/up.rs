//! `up` against the simulator: a fresh run reads each thing once, a re-run makes zero mutating
//! requests, `down` empties Proxmox, impossible plans fail before any mutating request,
//! injected 5xx and task failures converge, and the binary's `--simulate` keeps the simulated
//! Proxmox across runs.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::process::Command;
use std::sync::Arc;

use provision::exec::simulate::SimOptions;
use provision::inventory::AuthKind;
use provision::pve::auth::Auth;
use provision::pve::client::{ClientConfig, PveClient};
use provision::pve::tls::TlsMode;

use crate::support::cli::BinaryWorkspace;
use crate::support::sim::{self, SimWorkspace};
use crate::support::sim_serve::SimServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_up_makes_zero_mutating_requests_and_down_empties_proxmox() {
    // Every built-in profile, each on the fixture `--simulate` picks for it.
    for name in sim::builtin_names() {
        let profile = sim::builtin(name);
        let workspace = SimWorkspace::start(&profile, None, sim::fast()).await;
        let first = workspace.up(&profile, sim::exec_options()).await.unwrap();
        assert!(first.mutating_calls > 0, "{name}");
        let wanted = provision::plan::wanted_vms(&profile).unwrap().len();
        assert_eq!(first.vms.len(), wanted, "{name}");

        let before = workspace.log().len();
        let second = workspace.up(&profile, sim::exec_options()).await.unwrap();
        assert_eq!(second.mutating_calls, 0, "{name}");
        assert_eq!(
            workspace.mutating_since(before),
            Vec::new(),
            "{name}: the re-run changed Proxmox"
        );
        // One read per VM at most, plus the inventory reads (four per Proxmox node, a few
        // cluster-wide).
        let reads = workspace.log().len() - before;
        let nodes = profile.proxmox.nodes.len();
        assert!(
            reads <= wanted + 4 * nodes + 4,
            "{name}: {reads} reads for {wanted} VMs on {nodes} nodes"
        );

        let down = workspace.down(&profile).await.unwrap();
        assert_eq!(down.destroyed.len(), wanted, "{name}");
        assert!(workspace.state().vms.is_empty());
        let resources = workspace.api.cluster_resources(Some("vm")).await.unwrap();
        assert!(resources.is_empty(), "{name}: {resources:?}");
        workspace.sim.shutdown().await;
    }
}

/// A cloud image download shows its bytes as wget's rows in its task log report them: the
/// download is held running (past its simulated transfer) until provision has reported all of
/// its bytes, then released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_download_reports_its_bytes_from_the_task_log() {
    use provision::exec::{CollectProgress, ExecEvent};
    let profile = sim::builtin("a100-8x");
    let workspace = SimWorkspace::start(&profile, None, sim::fast()).await;
    let stepper = workspace.sim.stepper();
    stepper.hold_next("download");
    let progress = Arc::new(CollectProgress::default());
    let transfers = || {
        progress
            .0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|event| match event {
                ExecEvent::Transfer { done, total, .. } => Some((*done, *total)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let up = workspace.up_with_progress(&profile, sim::exec_options(), progress.clone());
    let release = async {
        for _ in 0..3000 {
            if transfers()
                .last()
                .is_some_and(|(done, total)| done == total)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let download = stepper
            .running_tasks()
            .into_iter()
            .find(|task| task.kind == "download")
            .expect("the download task runs");
        stepper.finish_ok(&download.upid).unwrap();
    };
    let (report, ()) = tokio::join!(up, release);
    report.unwrap();
    let seen = transfers();
    assert!(!seen.is_empty());
    assert!(
        seen.windows(2).all(|pair| pair[0].0 <= pair[1].0),
        "{seen:?}"
    );
    let (done, total) = *seen.last().unwrap();
    assert_eq!(done, total, "{seen:?}");
    assert!(total > 100 << 20, "{seen:?}");
    workspace.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_up_reads_what_it_already_knows_once() {
    // a100-8x: seven VMs on one node, each with a seed ISO and a resized disk.
    let profile = sim::builtin("a100-8x");
    let workspace = SimWorkspace::start(&profile, None, sim::fast()).await;
    let report = workspace.up(&profile, sim::exec_options()).await.unwrap();
    let vms = report.vms.len();
    assert!(vms > 1);
    let log = workspace.log();
    let gets = |wanted: &dyn Fn(&str) -> bool| {
        log.iter()
            .filter(|r| r.method == "GET" && wanted(&r.path))
            .count()
    };
    // The config once per VM (resize reads it; the seed cleanup reuses it).
    assert_eq!(
        gets(&|path| path.contains("/qemu/") && path.ends_with("/config")),
        vms
    );
    // Its power state is known: this run created it and has not started it yet.
    assert_eq!(gets(&|path| path.ends_with("/status/current")), 0);
    // A storage's content once by the inventory and once by the run, for the seed ISOs and
    // the image together.
    assert_eq!(
        gets(&|path| path.contains("/storage/") && path.ends_with("/content")),
        2
    );
    // The VMID was free in the plan: no listing before a create. One listing for the plan,
    // then at most one address check per VM (checks of VMs created together share one; the
    // storage lock staggers the creates' ends, so on a loaded machine none may share).
    assert!(gets(&|path| path == "/cluster/resources") <= vms + 1);
    // The guest agent is asked for its addresses, not pinged first.
    assert!(
        !log.iter().any(|r| r.path.ends_with("/agent/ping")),
        "the agent was pinged"
    );
    workspace.sim.shutdown().await;
}

/// Runs `plan` with a profile the fixture cannot host; asserts the error and that nothing
/// mutating was sent.
async fn refused(workspace: &SimWorkspace, profile: &provision::profile::Profile, wanted: &str) {
    let error = workspace
        .up(profile, sim::exec_options())
        .await
        .unwrap_err();
    let text = format!("{error:#}");
    assert!(text.contains(wanted), "expected `{wanted}` in: {text}");
    assert_eq!(workspace.mutating_since(0), Vec::new(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_plans_fail_before_any_mutating_request() {
    // Not enough GPUs: five 2-GPU workers on an 8-GPU host.
    let mut profile = sim::builtin("a100-8x");
    let gpu = profile
        .node_groups
        .iter()
        .position(|group| group.name == "gpu")
        .unwrap();
    profile.node_groups[gpu].count = 5;
    profile.node_groups[gpu]
        .addresses
        .push("10.0.0.25".parse().unwrap());
    let workspace = SimWorkspace::start(&profile, None, sim::fast()).await;
    refused(&workspace, &profile, "not enough GPUs").await;
    workspace.sim.shutdown().await;

    // Not enough hugepages: 480 GiB of 1 GiB pages per NUMA node, two workers of 300 GiB each
    // on one NUMA node.
    let mut profile = sim::builtin("a100-8x");
    profile.node_groups[gpu].memory_mib = 300 * 1024;
    let workspace = SimWorkspace::start(&profile, None, sim::fast()).await;
    refused(&workspace, &profile, "hugepages").await;
    workspace.sim.shutdown().await;

    // IOMMU off (the fixture's GPU is an L40S).
    let mut profile = sim::builtin("vllm-timeslice");
    profile.node_groups[1].gpus.as_mut().unwrap().filter = Some(
        provision::profile::model::GpuFilter::One("10de:*".to_owned()),
    );
    let workspace = SimWorkspace::start(&profile, Some("pve-iommu-off"), sim::fast()).await;
    refused(&workspace, &profile, "IOMMU").await;
    workspace.sim.shutdown().await;

    // A GPU sharing its IOMMU group with a USB controller.
    let profile = sim::builtin("sentinel");
    let workspace = SimWorkspace::start(&profile, Some("pve-sentinel"), sim::fast()).await;
    refused(&workspace, &profile, "shares IOMMU group 14").await;
    workspace.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_cannot_create_mappings_is_refused_before_any_mutating_request() {
    let profile = sim::builtin("a100-8x");
    let workspace = SimWorkspace::start(&profile, None, sim::fast()).await;
    let inventory = pve_sim::Inventory::builtin("pve-a100-pcie").unwrap();
    let limited = inventory
        .tokens
        .iter()
        .find(|token| token.tokenid == "ci@pve!limited")
        .unwrap();
    let client = PveClient::new(ClientConfig::new(
        workspace.sim.base_url(),
        Auth::parse_api_token(&format!("{}={}", limited.tokenid, limited.secret)).unwrap(),
        TlsMode::Fingerprint(workspace.sim.fingerprint()),
    ))
    .unwrap();
    let error = workspace
        .plan_as(
            &profile,
            Arc::new(client),
            AuthKind::Token {
                user: limited.tokenid.clone(),
                may_create_mappings: false,
            },
        )
        .await
        .unwrap_err();
    let text = format!("{error:#}");
    assert!(text.contains("raw PCI device"), "{text}");
    assert!(text.contains("resource mapping"), "{text}");
    assert_eq!(workspace.mutating_since(0), Vec::new());
    workspace.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_converges_despite_injected_server_errors_and_task_failures() {
    let profile = sim::builtin("a100-8x");
    let options = SimOptions {
        fail_rate: 0.10,
        task_fail_rate: 0.05,
        seed: 42,
        ..sim::fast()
    };
    let workspace = SimWorkspace::start(&profile, None, options).await;
    let mut attempts = 0;
    let report = loop {
        attempts += 1;
        match workspace.up(&profile, sim::exec_options()).await {
            Ok(report) => break report,
            // The executor retries per error kind; a run that still gives up leaves a state a
            // re-run continues from (at most one such re-run is tolerated).
            Err(error) if attempts < 2 => eprintln!("run {attempts} failed: {error:#}"),
            Err(error) => panic!("no convergence after {attempts} runs: {error:#}"),
        }
    };
    assert_eq!(report.vms.len(), 7);
    let failures = workspace
        .log()
        .iter()
        .filter(|request| request.status >= 500)
        .count();
    assert!(failures > 0, "the seed injected no failure");
    // Converged: a plan without changes and every VM once.
    assert!(workspace.plan(&profile).await.unwrap().is_noop());
    let resources = workspace.api.cluster_resources(Some("vm")).await.unwrap();
    assert_eq!(resources.len(), 7);
    workspace.sim.shutdown().await;
}

#[test]
fn the_binary_keeps_the_simulated_proxmox_across_runs() {
    let binary = BinaryWorkspace::new();
    let workspace = binary.workspace();

    // Without an endpoint and without --simulate: a user error with the hint.
    let (code, _, stderr) = binary.run(&["plan", "--profile", "ci-nested"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("PROXMOX_VE_ENDPOINT"), "{stderr}");
    assert!(stderr.contains("--simulate"), "{stderr}");

    let log = binary.dir().join("requests.jsonl");
    let log_arg = log.to_str().unwrap();
    let sim = ["--simulate", "--sim-time-scale", "0.005"];
    let up: Vec<&str> = [&["up", "--profile", "ci-nested"][..], &sim[..]].concat();
    let (code, stdout, stderr) = binary.run(&up);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("2 VMs ready"), "{stdout}");
    // The first run in a fresh directory saves the simulator's state without an error.
    assert!(!stderr.contains("ERROR"), "{stderr}");
    assert!(workspace.join(".provision/sim/state.json").exists());

    let again: Vec<&str> = [&up[..], &["--sim-request-log", log_arg][..]].concat();
    let (code, stdout, stderr) = binary.run(&again);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("no changes made to Proxmox"), "{stderr}");
    assert!(stdout.contains("(0 mutating requests)"), "{stdout}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.is_empty());
    assert!(
        logged
            .lines()
            .all(|line| line.contains(r#""method":"GET""#)),
        "{logged}"
    );

    let plan: Vec<&str> = [
        &["plan", "--profile", "ci-nested", "--output", "json"][..],
        &sim[..],
    ]
    .concat();
    let (code, stdout, stderr) = binary.run(&plan);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["actions"], serde_json::json!([]));

    // `plan --destroy` previews `down`: the two VMs, as JSON and as text.
    let preview: Vec<&str> = [&plan[..], &["--destroy"][..]].concat();
    let (code, stdout, stderr) = binary.run(&preview);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["summary"]["destroy"], 2, "{stdout}");
    let text: Vec<&str> = [
        &["plan", "--profile", "ci-nested", "--destroy"][..],
        &sim[..],
    ]
    .concat();
    let (code, stdout, stderr) = binary.run(&text);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("Plan: 0 to create, 0 to update, 0 to replace, 2 to destroy."),
        "{stdout}"
    );

    let down: Vec<&str> = [&["down", "--profile", "ci-nested", "--yes"][..], &sim[..]].concat();
    let (code, stdout, stderr) = binary.run(&down);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("destroyed 2 VMs"), "{stdout}");
    let (code, stdout, _) = binary.run(&plan);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["summary"]["create"], 2);
}

#[test]
fn a_torn_simulator_state_file_is_a_user_error_with_the_command_to_set_it_aside() {
    let binary = BinaryWorkspace::new();
    let workspace = binary.workspace();
    let sim_dir = workspace.join(".provision/sim");
    std::fs::create_dir_all(&sim_dir).unwrap();
    // What a process killed mid-write used to leave: a prefix of the JSON.
    std::fs::write(sim_dir.join("state.json"), br#"{"inventory": {"nodes": ["#).unwrap();

    let plan = ["plan", "--profile", "ci-nested", "--simulate"];
    // `sim serve --state-file` explains it the same way, before listening.
    let serve = [
        "sim",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--state-file",
        ".provision/sim/state.json",
    ];
    let (code, _, stderr) = binary.run(&serve);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("mv .provision/sim/state.json"), "{stderr}");

    let (code, _, stderr) = binary.run(&plan);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("state.json is not valid"), "{stderr}");
    assert!(stderr.contains("not a real cluster"), "{stderr}");
    let mv = stderr
        .lines()
        .find_map(|line| line.split_once("mv ").map(|(_, command)| command.trim()))
        .unwrap_or_else(|| panic!("no mv command in {stderr}"));
    let (from, to) = mv.split_once(' ').unwrap();
    // The printed command works as printed (paths relative to the workspace).
    std::fs::rename(workspace.join(from), workspace.join(to)).unwrap();
    let (code, _, stderr) = binary.run(&plan);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn sim_serve_warns_off_loopback_and_its_printed_lines_connect_provision() {
    let binary = BinaryWorkspace::new();
    let workspace = binary.workspace();
    binary.user_key();

    let server = SimServer::start("0.0.0.0:0", "pve-ci");
    // The fixture's published secret is not the one in use.
    let text = server.banner.join("\n");
    assert!(
        !text.contains("5f1c3a6e-8d2b-4c71-9e0a-2b7d4f6a9c13"),
        "{text}"
    );
    let exports = server.exports();
    // The printed provision.toml line is an alternative; the export lines alone must work.
    assert!(text.contains("[proxmox] fingerprint = "), "{text}");

    // The export lines as printed, then provision in the same shell.
    let script = format!(
        "{}\nexec \"$0\" plan --profile ci-nested --output json",
        exports.join("\n")
    );
    let output = Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_provision")])
        .current_dir(&workspace)
        .env("HOME", binary.home())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let server_stderr = server.stop();
    assert!(
        server_stderr.contains("WARNING: listening on 0.0.0.0"),
        "{server_stderr}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["summary"]["create"], 2, "{json}");
}

#[test]
fn a_disruptive_up_off_a_terminal_needs_yes_and_changes_nothing_without_it() {
    let binary = BinaryWorkspace::new();
    let workspace = binary.workspace();
    let sim = ["--simulate", "--sim-time-scale", "0.005"];
    let up: Vec<&str> = [&["up", "--profile", "ci-nested"][..], &sim[..]].concat();
    let (code, _, stderr) = binary.run(&up);
    assert_eq!(code, 0, "{stderr}");

    // More cores for every VM: each restarts, one at a time.
    let profile = std::fs::read_to_string("profiles/ci-nested.toml")
        .unwrap()
        .replace("cores = 2", "cores = 4");
    std::fs::create_dir_all(workspace.join("profiles")).unwrap();
    std::fs::write(workspace.join("profiles/ci-nested.toml"), profile).unwrap();

    let plan: Vec<&str> = [&["plan", "--profile", "ci-nested"][..], &sim[..]].concat();
    let (code, stdout, stderr) = binary.run(&plan);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Rolling: 2 waves"), "{stdout}");
    assert!(
        stdout.contains("  1.  ci-server-1 (restart: cores 2 → 4), drain: no\n"),
        "{stdout}"
    );

    let log = binary.dir().join("requests.jsonl");
    let logged: Vec<&str> = [&up[..], &["--sim-request-log", log.to_str().unwrap()][..]].concat();
    let (code, stdout, stderr) = binary.run(&logged);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("refusing to restart, replace or remove 2 running VMs of cluster ci in 2 waves without confirmation; nothing was changed"),
        "{stderr}"
    );
    assert!(stderr.contains("--yes"), "{stderr}");
    let requests = std::fs::read_to_string(&log).unwrap();
    assert!(
        requests
            .lines()
            .all(|line| line.contains(r#""method":"GET""#)),
        "{requests}"
    );

    let confirmed: Vec<&str> = [&up[..], &["--auto-approve"][..]].concat();
    let (code, stdout, stderr) = binary.run(&confirmed);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("2 VMs ready"), "{stdout}");
    let (code, _, stderr) = binary.run(&[&up[..], &["-y"][..]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("no changes made to Proxmox"), "{stderr}");
}
