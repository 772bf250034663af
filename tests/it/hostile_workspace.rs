//! Hostile input and hard faults through the real binary: a permissive umask, workspace files other
//! users could write, a world-readable token, a held lock, a corrupt state file, `--quiet`.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::cli::Provision;

const PROFILE: &str = "ci-nested";

/// `provision ARGS` in `cwd` under `umask 000`, as a careless shell would start it.
fn provision(cwd: &Path, args: &[&str]) -> Command {
    Provision::under_umask_000(args).cwd(cwd).command()
}

fn run(cwd: &Path, args: &[&str]) -> (i32, String) {
    let Output { status, stderr, .. } = provision(cwd, args).output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

const SIMULATED_UP: &[&str] = &[
    "up",
    "--profile",
    PROFILE,
    "--simulate",
    "--sim-time-scale",
    "0.01",
    "-q",
];

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every directory and file below `dir`.
fn walk(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        found.push(path.clone());
        if path.is_dir() {
            walk(&path, found);
        }
    }
}

#[test]
fn umask_000_still_leaves_every_workspace_directory_and_secret_private() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run(dir.path(), SIMULATED_UP);
    assert_eq!(code, 0, "{stderr}");
    let state = dir.path().join(".provision");
    let mut paths = vec![state.clone()];
    walk(&state, &mut paths);
    assert!(paths.len() > 5, "{paths:?}");
    for path in paths {
        let mode = mode(&path);
        let public_key = path.extension().is_some_and(|ext| ext == "pub");
        let expected = if path.is_dir() {
            0o700
        } else if public_key {
            0o644
        } else {
            0o600
        };
        assert_eq!(mode, expected, "{} has mode {mode:o}", path.display());
    }
}

#[test]
fn workspace_directories_others_can_write_are_refused_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run(dir.path(), SIMULATED_UP);
    assert_eq!(code, 0, "{stderr}");
    let state = dir.path().join(".provision");
    let secrets = state.join("secrets");
    chmod(&secrets, 0o777);
    let (code, stderr) = run(dir.path(), SIMULATED_UP);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("chmod 700 {}", secrets.display())),
        "{stderr}"
    );
    chmod(&secrets, 0o700);
    chmod(&state, 0o777);
    let (code, stderr) = run(dir.path(), SIMULATED_UP);
    assert_eq!(code, 1, "a workspace the user can fix: {stderr}");
    assert!(
        stderr.contains(&format!("chmod 700 {}", state.display())),
        "{stderr}"
    );
}

/// A workspace whose Proxmox refuses connections at once, with the token in `pve.token`.
fn unreachable_workspace(dir: &Path, token_mode: u32) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    std::fs::write(
        dir.join("provision.toml"),
        format!(
            "[proxmox]\nendpoint = \"https://127.0.0.1:{port}\"\napi_token_file = \"pve.token\"\ninsecure = true\n"
        ),
    )
    .unwrap();
    let token = dir.join("pve.token");
    std::fs::write(&token, "root@pam!ci=s3cr3t\n").unwrap();
    chmod(&token, token_mode);
    // The profile's default key (`~/.ssh/id_ed25519`), HOME being `dir`.
    std::fs::create_dir_all(dir.join(".ssh")).unwrap();
    std::fs::write(
        dir.join(".ssh/id_ed25519.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEpydjo2bsaF1piJ8pbBDshhi+/I2e7qQ7B1Rn1jrEIR test\n",
    )
    .unwrap();
}

#[test]
fn security_warnings_survive_quiet_and_a_token_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    unreachable_workspace(dir.path(), 0o644);
    let plan = |dir: &Path| {
        let output = provision(dir, &["plan", "--profile", PROFILE, "-q"])
            .env("HOME", dir)
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = plan(dir.path());
    assert_eq!(code, 2, "Proxmox is unreachable: {stderr}");
    assert!(
        stderr.contains("TLS certificate verification is OFF"),
        "{stderr}"
    );
    let token = dir.path().join("pve.token");
    assert!(
        stderr.contains("readable by other users")
            && stderr.contains(&format!("chmod 600 {}", token.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
    // Without --quiet the retries against the unreachable Proxmox are announced as they happen.
    chmod(&token, 0o600);
    let output = provision(dir.path(), &["plan", "--profile", PROFILE])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("(attempt 1 of 6)"), "{stderr}");
    assert!(stderr.contains("(attempt 5 of 6)"), "{stderr}");
    assert!(
        stderr.contains("giving up after the last attempt (by about 20"),
        "{stderr}"
    );
    assert!(!stderr.contains("readable by other users"), "{stderr}");
    chmod(&token, 0o666);
    let (code, stderr) = plan(dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("chmod 600 {}", token.display())),
        "{stderr}"
    );
}

/// The process holding the lock, ended (by its own pid) when the test ends, even on failure.
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        if self.0.kill().is_ok() {
            self.0.wait().ok();
        }
    }
}

#[test]
fn a_held_lock_names_its_holder_in_human_time_and_never_asks_to_delete_it() {
    let dir = tempfile::tempdir().unwrap();
    // A slow simulated run holds the lock for many seconds.
    let holder = provision(
        dir.path(),
        &[
            "up",
            "--profile",
            PROFILE,
            "--simulate",
            "--sim-time-scale",
            "5",
            "-q",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let holder = Holder(holder);
    let lock = dir.path().join(".provision/lock");
    let started = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|text| text.contains("pid")) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the first run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, stderr) = run(dir.path(), SIMULATED_UP);
    let pid = holder.0.id();
    drop(holder);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");
    assert!(
        stderr.contains(&format!("`provision up --profile {PROFILE}`")),
        "{stderr}"
    );
    let year = stderr
        .split("running since ")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(
        year.starts_with("20") && year.contains(" UTC ("),
        "{stderr}"
    );
    assert!(
        stderr.contains(" s ago)") || stderr.contains(" min ago)"),
        "{stderr}"
    );
    assert!(!stderr.contains("remove"), "{stderr}");
    assert!(stderr.contains("hint"), "{stderr}");
}

#[test]
fn a_corrupt_state_is_refused_with_the_command_that_moves_it_aside() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".provision");
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o700);
    std::fs::write(state.join("state.json"), "{not json").unwrap();
    let (code, stderr) = run(dir.path(), SIMULATED_UP);
    assert_eq!(code, 1, "{stderr}");
    let path = std::fs::canonicalize(state.join("state.json")).unwrap();
    assert!(
        stderr.contains(&format!("mv {} {}.corrupt", path.display(), path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("re-adopts the VMs"), "{stderr}");
}
