//! End to end on the testbed: `provision up --simulate --guests testbed` builds the homelab-ha-shaped
//! cluster (3 servers + 2 agents) on real Debian hosts (simulated Proxmox, real cloud-init, real OpenSSH,
//! real systemd). The k3s there is scripts/k3s-standin/k3s, a stand-in (real k3s cannot be downloaded on
//! test machines): it behaves like k3s at the points provision relies on, and this test says so.
//!
//! One scenario on five reserved hosts (tb21 upward): converge; a second `up` changes no remote file and
//! restarts no service; `kubeconfig --merge` keeps other entries; a replaced host key is refused naming the
//! host and both fingerprints; a host crashed during phase 2 makes `up` fail naming it, and the next `up`
//! converges; `down --guests testbed` stops every host.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::cli::Provision;
use crate::support::testbed::{self, Testbed};

/// `provision --workspace WORKSPACE ARGS` with the test hosts' script and `env`.
pub(crate) fn provision(workspace: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    env.iter()
        .fold(
            Provision::new(args)
                .workspace(workspace)
                .env("PROVISION_TESTBED_SCRIPT", testbed::script()),
            |command, (key, value)| command.env(key, value),
        )
        .output()
}

/// `provision down --guests testbed` of the cluster `up_ok` built: destroys the VMs and stops the
/// test hosts that played them.
pub(crate) fn down_with_guests(workspace: &Path, profile: &Path) -> Output {
    let profile_text = profile.display().to_string();
    provision(
        workspace,
        &[
            "down",
            "--profile",
            &profile_text,
            "--simulate",
            "--sim-inventory",
            "pve-homelab",
            "--guests",
            "testbed",
            "--yes",
        ],
        &[],
    )
}

fn up_args(profile: &Path) -> Vec<String> {
    [
        "--output",
        "json",
        "up",
        "--profile",
        &profile.display().to_string(),
        "--simulate",
        "--sim-inventory",
        "pve-homelab",
        "--guests",
        "testbed",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn up(workspace: &Path, profile: &Path) -> (Output, String) {
    up_with(workspace, profile, &[])
}

fn up_with(workspace: &Path, profile: &Path, extra: &[&str]) -> (Output, String) {
    let mut args = up_args(profile);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let output = provision(workspace, &args, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!(
        "up took {:.1}s, exit {:?}\n{stderr}",
        started.elapsed().as_secs_f64(),
        output.status.code()
    );
    (output, stderr)
}

pub(crate) fn up_ok(workspace: &Path, profile: &Path) -> serde_json::Value {
    let (output, stderr) = up(workspace, profile);
    assert!(output.status.success(), "up failed:\n{stderr}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The testbed-ha fixture pointed at the reserved hosts, the stand-in's sha256 and the client key.
pub(crate) fn write_profile(testbed: &Testbed, workspace: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/profiles/testbed-ha.toml"),
    )
    .unwrap();
    let mut document: toml_edit::DocumentMut = text.parse().unwrap();
    let standin = testbed::standin_k3s();
    let sha256 = provision::nodeprep::sha256_hex(&std::fs::read(&standin).unwrap());
    document["airgap"]["k3s_binary"] = toml_edit::value(standin.display().to_string());
    document["airgap"]["k3s_sha256"] = toml_edit::value(sha256);
    document["ssh"]["private_key"] =
        toml_edit::value(testbed.client_key_path.display().to_string());
    let addresses: Vec<&str> = testbed.hosts.iter().map(|h| h.address.as_str()).collect();
    let groups = document["node_groups"].as_array_of_tables_mut().unwrap();
    for (index, group) in groups.iter_mut().enumerate() {
        let slice = if index == 0 {
            &addresses[..3]
        } else {
            &addresses[3..]
        };
        group["addresses"] = toml_edit::value(toml_edit::Array::from_iter(slice.iter().copied()));
    }
    let path = workspace.join("testbed-ha.toml");
    std::fs::write(&path, document.to_string()).unwrap();
    path
}

/// What must not change on a host when nothing is to be done: provision's files and the k3s service.
const FINGERPRINT: &str = "stat -c '%n %Y %a' /usr/local/bin/k3s /etc/rancher/k3s/config.yaml \
     /etc/systemd/system/k3s*.service /etc/systemd/system/k3s*.env /etc/modules-load.d/provision-k3s.conf \
     /etc/sysctl.d/90-provision-k3s.conf /etc/fstab; \
     for unit in k3s k3s-agent; do systemctl is-enabled --quiet $unit 2>/dev/null && \
     systemctl show -p NRestarts,ActiveEnterTimestamp,MainPID $unit; done; true";

fn host_fingerprints(testbed: &Testbed) -> Vec<String> {
    testbed
        .hosts
        .iter()
        .map(|host| testbed.ssh_ok(&host.name, FINGERPRINT))
        .collect()
}

fn ssh_fingerprint(public_key_file: &Path) -> String {
    let output = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key_file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

/// `k3s kubectl get nodes -o json` on the bootstrap server: (name, ready, labels, taints).
fn cluster_nodes(testbed: &Testbed) -> serde_json::Value {
    serde_json::from_str(&testbed.ssh_ok(&testbed.hosts[0].name, "k3s kubectl get nodes -o json"))
        .unwrap()
}

pub(crate) fn assert_five_ready_nodes(testbed: &Testbed) {
    let nodes = cluster_nodes(testbed);
    let items = nodes["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{nodes:#}");
    for item in items {
        let name = item["metadata"]["name"].as_str().unwrap();
        let ready = item["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{name} is not Ready: {item:#}");
        let labels = &item["metadata"]["labels"];
        let taints = item["spec"]["taints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if name.contains("server") {
            assert_eq!(labels["node-role.example/control"], "true", "{item:#}");
            assert_eq!(labels["node-role.kubernetes.io/etcd"], "true", "{item:#}");
            assert!(taints.is_empty(), "{item:#}");
        } else {
            assert_eq!(labels["node-role.example/worker"], "true", "{item:#}");
            assert_eq!(taints.len(), 1, "{item:#}");
            assert_eq!(taints[0]["key"], "dedicated");
            assert_eq!(taints[0]["value"], "batch");
            assert_eq!(taints[0]["effect"], "NoSchedule");
        }
    }
}

#[test]
fn up_simulate_without_guests_skips_phase_2_in_one_line() {
    let workspace = tempfile::tempdir().unwrap();
    let output = provision(
        workspace.path(),
        &["up", "--profile", "homelab-ha", "--simulate"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("phase 2 (SSH, k3s) skipped"))
            .collect::<Vec<_>>(),
        [provision::commands::up_phase2::SKIPPED_SIMULATED]
    );
    let output = provision(
        workspace.path(),
        &[
            "--output",
            "json",
            "up",
            "--profile",
            "homelab-ha",
            "--simulate",
            "--vms-only",
        ],
        &[],
    );
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["phase2"]["skipped"], "--vms-only");
    assert_eq!(
        report["mutating_calls"], 0,
        "the second run changes nothing"
    );
}

#[test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
fn e2e_homelab_ha_shaped_cluster_on_the_testbed() {
    let Some(testbed) = Testbed::exclusive_stopped(5) else {
        return;
    };
    let scenario = Instant::now();
    let workspace = tempfile::tempdir().unwrap();
    let workspace = workspace.path();
    let profile = write_profile(&testbed, workspace);

    // 1. Converge from nothing.
    let report = up_ok(workspace, &profile);
    let phase2 = &report["phase2"];
    assert_eq!(phase2["changed"], true, "{report:#}");
    assert_eq!(phase2["existing_cluster"], false);
    assert_eq!(phase2["bootstrap"], "tbha-server-1");
    assert_eq!(phase2["nodes"].as_array().unwrap().len(), 5);
    for node in phase2["nodes"].as_array().unwrap() {
        assert_eq!(node["started"], true, "{node:#}");
    }
    eprintln!("stand-in k3s (not k3s): checking the cluster it reports");
    assert_five_ready_nodes(&testbed);
    assert_eq!(
        std::fs::metadata(workspace.join(".provision"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700,
        "the state directory is private even without `init`"
    );
    let kubeconfig = workspace.join(".provision/kubeconfig");
    assert_eq!(
        std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let kubeconfig_text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(
        kubeconfig_text.contains(&format!("https://{}:6443", testbed.hosts[0].address)),
        "{kubeconfig_text}"
    );
    eprintln!("converged after {:.1}s", scenario.elapsed().as_secs_f64());

    // 2. A second `up` writes no remote file and restarts no service.
    let before = host_fingerprints(&testbed);
    let (output, stderr) = up_with(workspace, &profile, &["--print-commands"]);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let phase2 = &report["phase2"];
    // --print-commands: every remote operation, the token never.
    let commands: Vec<&str> = phase2["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        commands.contains(&"[tbha-agent-2] $ cloud-init status --wait"),
        "{commands:#?}"
    );
    assert!(
        commands
            .iter()
            .any(|c| c.contains("k3s kubectl get nodes -o json"))
    );
    let token = std::fs::read_to_string(provision::k3s::token::K3sToken::path(
        &workspace.join(".provision/secrets"),
    ))
    .unwrap();
    let secret = token.trim().rsplit(':').next().unwrap();
    assert!(secret.len() >= 16);
    assert!(!stderr.contains(secret) && !String::from_utf8_lossy(&output.stdout).contains(secret));
    assert_eq!(phase2["changed"], false, "{phase2:#}");
    assert_eq!(phase2["restarted"].as_array().unwrap().len(), 0);
    assert_eq!(phase2["kubeconfig_changed"], false);
    assert_eq!(report["mutating_calls"], 0);
    for node in phase2["nodes"].as_array().unwrap() {
        assert_eq!(node["changed"], false, "{node:#}");
    }
    assert_eq!(
        host_fingerprints(&testbed),
        before,
        "a re-run touched a host"
    );

    // 3. kubeconfig --merge keeps other entries.
    let kube_dir = tempfile::tempdir().unwrap();
    let target = kube_dir.path().join("config");
    std::fs::write(
        &target,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: https://prod:6443}\n\
         users:\n- name: prod\n  user: {token: p}\ncontexts:\n- name: prod\n  context: {cluster: prod, user: prod}\n\
         current-context: prod\n",
    )
    .unwrap();
    let output = provision(
        workspace,
        &["kubeconfig", "--merge"],
        &[("KUBECONFIG", target.as_path())],
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        kubeconfig.display().to_string()
    );
    let merged: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&target).unwrap()).unwrap();
    let contexts: Vec<&str> = merged["contexts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(contexts, ["prod", "tbha"]);
    assert_eq!(merged["current-context"], "prod");

    // 4. A replaced host key is refused, naming the host and both fingerprints.
    let agent = testbed.hosts[3].name.clone();
    testbed.ssh_ok(
        &agent,
        "mkdir -p /root/saved && cp /etc/ssh/ssh_host_ed25519_key* /root/saved/ && \
         rm -f /etc/ssh/ssh_host_ed25519_key* && \
         ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && systemctl restart ssh",
    );
    let intruder = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        intruder.path(),
        testbed.ssh_ok(&agent, "cat /etc/ssh/ssh_host_ed25519_key.pub"),
    )
    .unwrap();
    let expected =
        ssh_fingerprint(&workspace.join(".provision/secrets/host-keys/tbha-agent-1.pub"));
    let actual = ssh_fingerprint(intruder.path());
    let (output, stderr) = up(workspace, &profile);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("host key of tbha-agent-1"), "{stderr}");
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains(&actual), "{stderr}");
    testbed.ssh_ok(
        &agent,
        "cp /root/saved/ssh_host_ed25519_key* /etc/ssh/ && systemctl restart ssh",
    );

    // 5. A host that crashes during phase 2: `up` fails naming it; the next `up` converges.
    // A one-shot `cloud-init` in front of the real one (sudo's PATH has /usr/local/bin first) holds
    // phase 2 on this host so that the crash lands while provision works on it.
    let victim = testbed.hosts[4].name.clone();
    testbed.ssh_ok(
        &victim,
        "printf '#!/bin/sh\\nrm -f /usr/local/bin/cloud-init\\ntouch /run/provision-test-held\\nexec sleep 600\\n' \
         >/usr/local/bin/cloud-init && chmod 0755 /usr/local/bin/cloud-init",
    );
    let args = up_args(&profile);
    let child = Command::new(env!("CARGO_BIN_EXE_provision"))
        .arg("--workspace")
        .arg(workspace)
        .args(&args)
        .env("PROVISION_TESTBED_SCRIPT", testbed::script())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !testbed
        .ssh(&victim, "test -e /run/provision-test-held")
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "phase 2 never reached {victim}");
        std::thread::sleep(Duration::from_millis(200));
    }
    testbed.crash(&victim);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("up with a crash:\n{stderr}");
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tbha-agent-2"), "{stderr}");
    assert!(
        stderr.contains(&testbed.hosts[4].address),
        "the error names the host's address: {stderr}"
    );
    let (output, stderr) = up(workspace, &profile);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{victim} was down")),
        "the testbed guest of a running VM is booted again: {stderr}"
    );
    assert_five_ready_nodes(&testbed);

    // 6. `down --guests testbed` destroys the VMs and stops the hosts that played them.
    let output = down_with_guests(workspace, &profile);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("down:\n{stderr}");
    assert!(output.status.success(), "{stderr}");
    for host in &testbed.hosts {
        assert!(
            stderr.contains(&format!("testbed: {} stopped", host.name)),
            "{stderr}"
        );
        assert!(!testbed.is_running(&host.name), "{} still runs", host.name);
    }
    eprintln!("whole scenario: {:.1}s", scenario.elapsed().as_secs_f64());
}
