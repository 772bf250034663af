//! The popular third-party Proxmox clients, unchanged, against `provision sim serve`: proxmoxer
//! (tests/clients/proxmoxer_gpu_vm.py) and ansible-playbook with community.general's
//! proxmox_kvm, proxmox_disk and proxmox_nic (tests/clients/ansible_gpu_vm.yml), each taking a
//! GPU VM through create, start, stop and delete. What they trip over is a simulator bug: the
//! simulator must answer as Proxmox VE 9.1 does, or these clients would pass here and fail on a
//! real node (or the other way round).
//!
//! The clients come from PyPI through `scripts/ci-setup-clients.sh` into a venv
//! (`$PROVISION_CLIENTS_VENV`, else `~/.cache/provision/clients-venv`). Without it the tests
//! skip loudly; with `CI=true` they fail, because CI must run them.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use provision::pve::{
    Auth, ClientConfig, NodeName, PveApi, PveClient, TlsMode, Upid, types::TaskStatus,
};
use serde_json::Value;

const NODE: &str = "pve1";
/// Fixed credentials, given through the environment as a user would keep them out of `ps`.
const TOKEN_SECRET: &str = "7d0c6a52-3f1e-4b8a-9c2d-5e4f3a2b1c0d";
const ROOT_PASSWORD: &str = "third-party-root-password";
/// The L40S of the `pve-gpu` fixture.
const GPU: &str = "0000:c1:00.0";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// The venv `scripts/ci-setup-clients.sh` fills.
fn clients_venv() -> PathBuf {
    if let Some(venv) = std::env::var_os("PROVISION_CLIENTS_VENV") {
        return PathBuf::from(venv);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/provision/clients-venv")
}

/// The venv when it has the clients; otherwise `None` after a loud message (a panic in CI).
fn venv_or_skip(test: &str) -> Option<PathBuf> {
    let venv = clients_venv();
    let missing: Vec<&str> = ["bin/python", "bin/ansible-playbook"]
        .into_iter()
        .filter(|tool| !venv.join(tool).is_file())
        .collect();
    if missing.is_empty() {
        return Some(venv);
    }
    let reason = format!("{} has no {}", venv.display(), missing.join(", "));
    assert!(
        !in_ci(),
        "{test}: CI must run the third-party client tests, but {reason} (scripts/ci-setup.sh runs scripts/ci-setup-clients.sh)"
    );
    eprintln!(
        "\n!!!!!!!! SKIPPED {test}: needs proxmoxer and ansible from PyPI: {reason}; run scripts/ci-setup-clients.sh !!!!!!!!\n"
    );
    None
}

/// `provision sim serve` as a child process, on an ephemeral loopback port.
struct ServedSim {
    child: Child,
    /// Kept open: the simulator's stdout stays a live pipe for as long as it runs.
    _stdout: BufReader<ChildStdout>,
    port: u16,
    fingerprint: String,
    dir: tempfile::TempDir,
}

impl ServedSim {
    fn start() -> ServedSim {
        let dir = tempfile::tempdir().unwrap();
        let stderr = std::fs::File::create(dir.path().join("sim.stderr")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_provision"))
            .args([
                "sim",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--inventory",
                "pve-gpu",
            ])
            .args(["--time-scale", "0.01", "--request-log"])
            .arg(dir.path().join("requests.jsonl"))
            .env("PVE_SIM_TOKEN_SECRET", TOKEN_SECRET)
            .env("PVE_SIM_ROOT_PASSWORD", ROOT_PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (mut port, mut fingerprint) = (None, None);
        let mut banner = String::new();
        while !banner.ends_with("press Ctrl-C to stop\n") {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap() == 0 {
                // Killed before reading on: ends the child the test started, by its handle.
                child.kill().unwrap_or_default();
                panic!(
                    "sim serve ended before its banner:\n{banner}\n{}",
                    std::fs::read_to_string(dir.path().join("sim.stderr")).unwrap_or_default()
                );
            }
            banner.push_str(&line);
            if let Some(rest) = line
                .trim()
                .strip_prefix("Proxmox VE simulator listening on ")
            {
                let address = rest
                    .strip_prefix("https://127.0.0.1:")
                    .and_then(|rest| rest.strip_suffix("/api2/json"))
                    .unwrap_or_else(|| panic!("unexpected URL line: {line}"));
                port = Some(address.parse::<u16>().unwrap());
            }
            if let Some(rest) = line
                .trim()
                .strip_prefix("certificate fingerprint (SHA-256): ")
            {
                fingerprint = Some(rest.to_owned());
            }
        }
        assert!(
            port.is_some() && fingerprint.is_some(),
            "no URL or fingerprint in the banner:\n{banner}"
        );
        assert!(
            banner.contains(&format!("PVEAPIToken=provision@pve!ci={TOKEN_SECRET}"))
                && banner.contains(&format!("user: root@pam password {ROOT_PASSWORD}")),
            "the banner does not show the credentials given in the environment:\n{banner}"
        );
        ServedSim {
            child,
            _stdout: stdout,
            port: port.unwrap(),
            fingerprint: fingerprint.unwrap(),
            dir,
        }
    }

    /// provision's own client, pinned to the printed fingerprint: the independent look at the
    /// simulator's state after a client ran.
    fn api(&self) -> PveClient {
        PveClient::new(ClientConfig::new(
            format!("https://127.0.0.1:{}", self.port),
            Auth::parse_api_token(&format!("provision@pve!ci={TOKEN_SECRET}")).unwrap(),
            TlsMode::Fingerprint(self.fingerprint.clone()),
        ))
        .unwrap()
    }

    /// Every request the simulator answered, in order.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sim.stderr")).unwrap_or_default()
    }
}

impl Drop for ServedSim {
    fn drop(&mut self) {
        // The child this test started, by its handle; an already ended one is fine.
        self.child.kill().unwrap_or_default();
        self.child.wait().map(drop).unwrap_or_default();
    }
}

fn assert_success(what: &str, output: &Output, sim: &ServedSim) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- simulator stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        sim.stderr()
    );
}

/// The one request `method path` answered 200, with its parameters.
fn the_request<'a>(requests: &'a [Value], method: &str, path: &str) -> &'a Value {
    let matching: Vec<&Value> = requests
        .iter()
        .filter(|request| request["method"] == method && request["path"] == path)
        .collect();
    assert_eq!(matching.len(), 1, "{method} {path}: {matching:?}");
    assert_eq!(matching[0]["status"], 200, "{:?}", matching[0]);
    &matching[0]["params"]
}

/// The UPIDs of `kind` the client polled, each checked as finished OK in the simulator.
async fn finished_tasks(api: &PveClient, requests: &[Value], kind: &str) -> Vec<TaskStatus> {
    let mut upids: Vec<String> = requests
        .iter()
        .filter_map(|request| request["path"].as_str())
        .filter_map(|path| path.strip_prefix(&format!("/nodes/{NODE}/tasks/")))
        .filter_map(|rest| rest.strip_suffix("/status"))
        .filter(|upid| upid.split(':').nth(5) == Some(kind))
        .map(str::to_owned)
        .collect();
    upids.dedup();
    let mut statuses = Vec::new();
    for upid in upids {
        let status = api
            .task_status(&NodeName(NODE.to_owned()), &Upid(upid))
            .await
            .unwrap();
        assert_eq!(
            (status.status.as_str(), status.exitstatus.as_deref()),
            ("stopped", Some("OK")),
            "{status:?}"
        );
        statuses.push(status);
    }
    statuses
}

/// No VM, no disk, no mapping left: the client deleted what it made.
async fn assert_cluster_empty(api: &PveClient) {
    let vms = api.cluster_resources(Some("vm")).await.unwrap();
    assert!(vms.is_empty(), "VMs left: {vms:?}");
    let volumes = api
        .storage_content(&NodeName(NODE.to_owned()), "local-lvm", None)
        .await
        .unwrap();
    assert!(volumes.is_empty(), "volumes left: {volumes:?}");
    let mappings = api.pci_mappings().await.unwrap();
    assert!(mappings.is_empty(), "mappings left: {mappings:?}");
}

fn client_file(name: &str) -> PathBuf {
    repo_root().join("tests/clients").join(name)
}

fn python(venv: &Path) -> PathBuf {
    venv.join("bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the clients venv (scripts/ci-setup-clients.sh): .ci/run runs it"]
async fn proxmoxer_takes_a_gpu_vm_through_its_life() {
    let Some(venv) = venv_or_skip("third_party::proxmoxer_takes_a_gpu_vm_through_its_life") else {
        return;
    };
    let sim = ServedSim::start();
    let output = Command::new(python(&venv))
        // proxmoxer warns on every unverified HTTPS request (verify_ssl=False).
        .args(["-W", "ignore:Unverified HTTPS request"])
        .arg(client_file("proxmoxer_gpu_vm.py"))
        .env("PVE_HOST", "127.0.0.1")
        .env("PVE_PORT", sim.port.to_string())
        .env("PVE_NODE", NODE)
        .env("PVE_TOKEN_USER", "provision@pve")
        .env("PVE_TOKEN_NAME", "ci")
        .env("PVE_TOKEN_SECRET", TOKEN_SECRET)
        .env("PVE_ROOT_PASSWORD", ROOT_PASSWORD)
        .env("PVE_GPU", GPU)
        .output()
        .unwrap();
    assert_success("proxmoxer_gpu_vm.py", &output, &sim);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("created, started, stopped and deleted"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    let requests = sim.requests();
    let login = the_request(&requests, "POST", "/access/ticket");
    assert_eq!(login["username"], "root@pam");
    let create = the_request(&requests, "POST", &format!("/nodes/{NODE}/qemu"));
    assert_eq!(create["machine"], "q35");
    assert_eq!(create["bios"], "ovmf");
    assert_eq!(create["hostpci0"], "mapping=provision-clients-gpu,pcie=1");
    let vmid = create["vmid"].as_str().unwrap();
    the_request(
        &requests,
        "POST",
        &format!("/nodes/{NODE}/qemu/{vmid}/status/start"),
    );
    the_request(
        &requests,
        "POST",
        &format!("/nodes/{NODE}/qemu/{vmid}/status/stop"),
    );
    the_request(&requests, "DELETE", &format!("/nodes/{NODE}/qemu/{vmid}"));
    let api = sim.api();
    for kind in ["qmcreate", "qmstart", "qmstop", "qmdestroy"] {
        let tasks = finished_tasks(&api, &requests, kind).await;
        assert_eq!(tasks.len(), 1, "{kind}: {tasks:?}");
        assert_eq!(tasks[0].id.as_deref(), Some(vmid), "{tasks:?}");
    }
    assert_cluster_empty(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the clients venv (scripts/ci-setup-clients.sh): .ci/run runs it"]
async fn ansible_proxmox_kvm_takes_a_gpu_vm_through_its_life() {
    let Some(venv) =
        venv_or_skip("third_party::ansible_proxmox_kvm_takes_a_gpu_vm_through_its_life")
    else {
        return;
    };
    let sim = ServedSim::start();
    let extra_vars = serde_json::json!({
        "pve_host": "127.0.0.1",
        "pve_port": sim.port,
        "pve_node": NODE,
        "pve_root_password": ROOT_PASSWORD,
        "pve_token_secret": TOKEN_SECRET,
        // A raw id (root@pam may use one): the whole device, all functions.
        "pve_gpu": GPU.trim_end_matches(".0"),
        "ansible_python_interpreter": python(&venv),
    });
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(venv.join("bin/ansible-playbook"))
        .args(["-i", "localhost,", "-e"])
        .arg(extra_vars.to_string())
        .arg(client_file("ansible_gpu_vm.yml"))
        // Ansible writes its temp files and caches under HOME; keep them out of the user's.
        .env("HOME", home.path())
        .env("ANSIBLE_LOCAL_TEMP", home.path().join("tmp"))
        .env("ANSIBLE_DEPRECATION_WARNINGS", "false")
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .unwrap();
    assert_success("ansible-playbook ansible_gpu_vm.yml", &output, &sim);

    let requests = sim.requests();
    let create = the_request(&requests, "POST", &format!("/nodes/{NODE}/qemu"));
    assert_eq!(create["machine"], "q35");
    assert_eq!(create["hostpci0"], "0000:c1:00,pcie=1");
    assert_eq!(create["tags"], "gpu,ansible", "as proxmox_kvm joins them");
    let vmid = create["vmid"].as_str().unwrap();
    let disk = the_request(
        &requests,
        "POST",
        &format!("/nodes/{NODE}/qemu/{vmid}/config"),
    );
    assert!(disk["scsi1"].as_str().unwrap().starts_with("local-lvm:8"));
    let nic = the_request(
        &requests,
        "PUT",
        &format!("/nodes/{NODE}/qemu/{vmid}/config"),
    );
    assert!(nic["net1"].as_str().unwrap().contains("tag=42"), "{nic}");
    let api = sim.api();
    // proxmox_kvm's `state: stopped` shuts down with forceStop=1.
    for kind in ["qmcreate", "qmconfig", "qmstart", "qmshutdown", "qmdestroy"] {
        let tasks = finished_tasks(&api, &requests, kind).await;
        assert_eq!(tasks.len(), 1, "{kind}: {tasks:?}");
        assert_eq!(tasks[0].id.as_deref(), Some(vmid), "{tasks:?}");
    }
    assert_cluster_empty(&api).await;
}
