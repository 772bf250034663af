//! The preflight (`provision doctor`, and the checks `up` runs before its first change): root-only
//! config keys with a token, missing privileges, storages without the content type provision
//! needs, no hardware virtualisation, a missing bridge, GPUs behind a disabled IOMMU or in a
//! shared group, hugepages — each refused before any mutating request, with its fix.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use provision::exec::doctor::{self, DoctorInput, Outcome};
use provision::exec::session::WorkspaceSeeds;
use provision::inventory::AuthKind;
use provision::pve::auth::Auth;
use provision::pve::client::{ClientConfig, PveClient};
use provision::pve::tls::TlsMode;

use crate::support::cli::BinaryWorkspace as Binary;
use crate::support::sim::{self, SimWorkspace};
use crate::support::sim_serve::SimServer as Served;

fn builtin_text(name: &str) -> &'static str {
    provision::profile::builtin::builtin(name).unwrap().text
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/pve-sim/fixtures")
        .join(format!("{name}.toml"));
    std::fs::read_to_string(path).unwrap()
}

/// Every request in a `--sim-request-log` file is a GET.
fn only_reads(log: &Path) -> bool {
    let logged = std::fs::read_to_string(log).unwrap_or_default();
    logged
        .lines()
        .all(|line| line.contains(r#""method":"GET""#))
}

#[test]
fn a_token_alone_cannot_set_hugepages_and_is_refused_before_any_change() {
    let binary = Binary::new();
    let log = binary.dir().join("requests.jsonl");
    let (code, _, stderr) = binary.run(&[
        "up",
        "--profile",
        "a100-8x",
        "--simulate",
        "--sim-time-scale",
        "0.002",
        "--sim-auth",
        "token",
        "--sim-request-log",
        log.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    for wanted in [
        "API token provision@pve!ci cannot set keys only root@pam may set",
        "a100-gpu-1 (",
        "a100-gpu-4 (",
        "hugepages",
        "keephugepages",
        "affinity",
        "PROXMOX_VE_USERNAME=root@pam",
        "drop numa_pinning and hugepages",
        "nothing was changed on Proxmox",
    ] {
        assert!(stderr.contains(wanted), "expected `{wanted}` in:\n{stderr}");
    }
    assert!(
        !stderr.contains("a100-cp-1 ("),
        "control-plane VMs set no root-only key:\n{stderr}"
    );
    assert!(only_reads(&log), "a mutating request was sent");

    // The token plus a root@pam ticket for the root-only keys (the default) converges.
    let (code, stdout, stderr) = binary.run(&[
        "up",
        "--profile",
        "a100-8x",
        "--simulate",
        "--sim-time-scale",
        "0.002",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("7 VMs ready"), "{stdout}");
}

#[test]
fn doctor_passes_a_healthy_proxmox_and_reports_json() {
    let binary = Binary::new();
    let (code, stdout, stderr) = binary.doctor("ci-nested", "pve-ci");
    assert_eq!(code, 0, "{stdout}{stderr}");
    for wanted in [
        "✓ api: Proxmox VE",
        "✓ node pve1: online, 16 CPUs, hardware virtualisation",
        "✓ bridge vmbr0 on pve1: present",
        "✓ storage local on pve1: iso, import",
        "✓ storage local-lvm on pve1: images",
        "✓ plan: 2 to create",
        "✓ privileges: all",
        "nothing blocks `provision up`",
    ] {
        assert!(stdout.contains(wanted), "expected `{wanted}` in:\n{stdout}");
    }
    let (code, stdout, _) = binary.run(&[
        "doctor",
        "--profile",
        "ci-nested",
        "--simulate",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["ok"], true);
    assert!(
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|check| check["outcome"] == "pass")
    );
}

/// `doctor` on a changed inventory or profile, in a fresh workspace (the simulator keeps its
/// inventory in the workspace): exit 1 and these lines.
fn assert_blocked(profile: &str, inventory: &str, wanted: &[&str]) {
    let binary = Binary::new();
    let (code, stdout, stderr) = binary.doctor(profile, inventory);
    assert_eq!(code, 1, "{stdout}{stderr}");
    for line in wanted {
        assert!(stdout.contains(line), "expected `{line}` in:\n{stdout}");
    }
    assert!(stdout.contains("block `provision up`"), "{stdout}");
}

#[test]
fn doctor_fails_each_blocking_check_with_its_fix() {
    let binary = Binary::new();
    let ci = fixture("pve-ci");

    let no_import = binary.file(
        "no-import.toml",
        &ci.replace(r#"["iso", "import", "vztmpl""#, r#"["iso", "vztmpl""#),
    );
    assert_blocked(
        "ci-nested",
        &no_import,
        &[
            "✗ storage local on pve1: serves iso,vztmpl,snippets,backup but not import",
            "fix: add content type import to local",
        ],
    );

    let no_kvm = binary.file(
        "no-kvm.toml",
        &ci.replace(
            "memory_gib = 64\n\n[[node.numa]]",
            "memory_gib = 64\nhvm = false\n\n[[node.numa]]",
        ),
    );
    assert_blocked(
        "ci-nested",
        &no_kvm,
        &["✗ node pve1: no hardware virtualisation", "nested=1"],
    );

    let other_bridge = binary.file(
        "bridge.toml",
        &builtin_text("ci-nested").replace("[network]\n", "[network]\nbridge = \"vmbr9\"\n"),
    );
    assert_blocked(
        &other_bridge,
        "pve-ci",
        &["✗ bridge vmbr9 on pve1: missing", "fix: create vmbr9"],
    );

    let any_gpu = binary.file(
        "vllm.toml",
        &builtin_text("vllm-timeslice").replace("filter = \"10de:2489\"", "filter = \"10de:*\""),
    );
    assert_blocked(
        &any_gpu,
        "pve-iommu-off",
        &["IOMMU is off (group -1)", "intel_iommu=on"],
    );

    assert_blocked(
        "sentinel",
        "pve-sentinel",
        &["! GPU 0000:", "shares IOMMU group 14", "✗ GPUs of"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_token_gets_one_list_of_every_missing_privilege() {
    let profile = sim::builtin("ci-nested");
    let workspace = SimWorkspace::start(&profile, Some("pve-ci"), sim::fast()).await;
    let inventory = pve_sim::Inventory::builtin("pve-ci").unwrap();
    let limited = inventory
        .tokens
        .iter()
        .find(|token| token.tokenid == "ci@pve!limited")
        .unwrap();
    let api = Arc::new(
        PveClient::new(ClientConfig::new(
            workspace.sim.base_url(),
            Auth::parse_api_token(&format!("{}={}", limited.tokenid, limited.secret)).unwrap(),
            TlsMode::Fingerprint(workspace.sim.fingerprint()),
        ))
        .unwrap(),
    );
    let auth = AuthKind::Token {
        user: limited.tokenid.clone(),
        may_create_mappings: true,
    };
    let seeds = WorkspaceSeeds::with_keys(
        &profile,
        workspace.state_dir().join("secrets/host-keys"),
        vec![sim::USER_KEY.to_owned()],
    );
    let state = workspace.state();
    let report = doctor::run(
        api.as_ref(),
        &auth,
        &DoctorInput {
            profile: &profile,
            state: &state,
            seeds: &seeds,
            workspace_root: &workspace.root,
            rolling: provision::plan::RollingOptions::default(),
        },
    )
    .await;
    assert!(report.blocks());
    let privileges = report
        .checks
        .iter()
        .find(|check| check.check == "privileges")
        .unwrap_or_else(|| panic!("{:#?}", report.checks));
    assert_eq!(privileges.outcome, Outcome::Fail);
    for wanted in [
        "API token ci@pve!limited lacks",
        "Sys.Modify on / (download the cloud image",
        "SDN.Use on /sdn/zones/localnetwork/vmbr0",
        "Datastore.Allocate on /storage/local",
    ] {
        assert!(
            privileges.detail.contains(wanted),
            "expected `{wanted}` in: {}",
            privileges.detail
        );
    }
    // Everything else it needs is there: one list, not the first refusal.
    assert!(
        !privileges.detail.contains("VM.Allocate"),
        "{}",
        privileges.detail
    );
    assert_eq!(workspace.mutating_since(0), Vec::new());
    workspace.sim.shutdown().await;
}

#[test]
fn credential_certificate_and_privilege_errors_show_their_hint_and_exit_1() {
    let served = Served::start("127.0.0.1:0", "pve-ci");
    let binary = Binary::new();
    let plan = ["plan", "--profile", "ci-nested"];
    let good = served.token("provision@pve!ci").to_owned();

    // A wrong secret: 401.
    let (id, _) = good.split_once('=').unwrap();
    let wrong = format!("{id}=00000000-0000-0000-0000-000000000000");
    let (code, _, stderr) = served.provision(&binary, &wrong, &served.fingerprint, &plan);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
    assert!(
        stderr.contains("the credentials are wrong or expired"),
        "{stderr}"
    );

    // Another certificate than the pinned one: nothing is sent.
    let other = vec!["AB"; 32].join(":");
    let (code, _, stderr) = served.provision(&binary, &good, &other, &plan);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("hint: nothing was sent"), "{stderr}");

    // A token without the privileges the plan needs: one list, before any change.
    let limited = served.token("ci@pve!limited").to_owned();
    let (code, stdout, stderr) = served.provision(
        &binary,
        &limited,
        &served.fingerprint,
        &["doctor", "--profile", "ci-nested"],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("✗ privileges: API token ci@pve!limited lacks"),
        "{stdout}"
    );
    assert!(stdout.contains("Sys.Modify on /"), "{stdout}");
    let (code, _, stderr) = served.provision(
        &binary,
        &limited,
        &served.fingerprint,
        &["up", "--profile", "ci-nested"],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("nothing was changed on Proxmox"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SDN.Use on /sdn/zones/localnetwork/vmbr0"),
        "{stderr}"
    );
}

/// Exit code, stdout and stderr of a run, with what changes between runs filtered: the
/// simulator's endpoint and certificate fingerprint, the temporary directory.
fn rendered(
    served: &Served,
    binary: &Binary,
    (code, stdout, stderr): (i32, String, String),
) -> String {
    let filter = |text: &str| {
        text.replace(&served.endpoint, "[ENDPOINT]")
            .replace(&served.fingerprint, "[FINGERPRINT]")
            .replace(&binary.dir().display().to_string(), "[TEMP]")
    };
    format!(
        "exit: {code}\n----- stdout -----\n{}----- stderr -----\n{}",
        filter(&stdout),
        filter(&stderr)
    )
}

/// The built-in `pve-ci` inventory plus a token that may read nothing.
const BLIND_TOKEN: &str = r#"
[[token]]
tokenid = "ci@pve!blind"
secret = "7d0c9f1e-2b6a-4e3d-8c5f-1a9b3e7d2c64"
privileges = []
"#;

#[test]
fn wrong_token_secret_snapshot() {
    let served = Served::start("127.0.0.1:0", "pve-ci");
    let binary = Binary::new();
    let good = served.token("provision@pve!ci").to_owned();
    let (id, _) = good.split_once('=').unwrap();
    let wrong = format!("{id}=00000000-0000-0000-0000-000000000000");
    let output = served.provision(
        &binary,
        &wrong,
        &served.fingerprint,
        &["plan", "--profile", "ci-nested"],
    );
    assert_eq!(output.0, 1, "{output:?}");
    insta::assert_snapshot!(rendered(&served, &binary, output));
}

#[test]
fn missing_privilege_snapshot() {
    let binary = Binary::new();
    let inventory = binary.file(
        "pve-ci-blind.toml",
        &format!(
            "{}{BLIND_TOKEN}",
            include_str!("../../crates/pve-sim/fixtures/pve-ci.toml")
        ),
    );
    let served = Served::start("127.0.0.1:0", &inventory);
    let blind = served.token("ci@pve!blind").to_owned();
    let output = served.provision(
        &binary,
        &blind,
        &served.fingerprint,
        &["plan", "--profile", "ci-nested"],
    );
    assert_eq!(output.0, 1, "{output:?}");
    insta::assert_snapshot!(rendered(&served, &binary, output));
}

#[test]
fn wrong_certificate_fingerprint_snapshot() {
    let served = Served::start("127.0.0.1:0", "pve-ci");
    let binary = Binary::new();
    let good = served.token("provision@pve!ci").to_owned();
    let other = vec!["AB"; 32].join(":");
    let output = served.provision(&binary, &good, &other, &["plan", "--profile", "ci-nested"]);
    assert_eq!(output.0, 1, "{output:?}");
    insta::assert_snapshot!(rendered(&served, &binary, output));
}

#[test]
fn doctor_missing_privileges_snapshot() {
    let served = Served::start("127.0.0.1:0", "pve-ci");
    let binary = Binary::new();
    let limited = served.token("ci@pve!limited").to_owned();
    let output = served.provision(
        &binary,
        &limited,
        &served.fingerprint,
        &["doctor", "--profile", "ci-nested"],
    );
    assert_eq!(output.0, 1, "{output:?}");
    insta::assert_snapshot!(rendered(&served, &binary, output));
}
