//! Whole-CLI snapshots: exit code, stdout and stderr of the real binary, temp paths filtered.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use crate::support::cli::{Provision, provision_snapshot};

/// Runs the binary in `cwd` and renders exit code + stdout + stderr, `cwd` replaced by `[TEMP]`.
fn run(args: &[&str], cwd: &Path) -> (i32, String) {
    let run = Provision::new(args).cwd(cwd).run();
    (run.code, run.render(&[(cwd, "[TEMP]")]))
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bad-profiles")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn help() {
    let dir = tempfile::tempdir().unwrap();
    let (code, output) = run(&["--help"], dir.path());
    assert_eq!(code, 0);
    insta::assert_snapshot!(output);
}

#[test]
fn version_and_missing_verb() {
    let dir = tempfile::tempdir().unwrap();
    let (code, output) = run(&["--version"], dir.path());
    assert_eq!(code, 0);
    assert_eq!(
        output.lines().nth(2),
        Some(format!("provision {}", env!("CARGO_PKG_VERSION")).as_str())
    );
    let (code, _) = run(&[], dir.path());
    assert_eq!(code, 1, "no verb is a user error");
    let (code, output) = run(&["validate"], dir.path());
    assert_eq!(code, 1, "{output}");
}

#[test]
fn profiles() {
    let dir = tempfile::tempdir().unwrap();
    let (code, output) = run(&["profiles"], dir.path());
    assert_eq!(code, 0);
    insta::assert_snapshot!(output);
}

#[test]
fn validate_good_profile() {
    let dir = tempfile::tempdir().unwrap();
    let (code, output) = run(&["validate", "--profile", "a100-8x"], dir.path());
    assert_eq!(code, 0);
    insta::assert_snapshot!(output);
}

#[test]
fn validate_bad_profile() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("two-servers.toml");
    std::fs::copy(fixture("two-servers.toml"), &copy).unwrap();
    let (code, output) = run(&["validate", "--profile", "./two-servers.toml"], dir.path());
    assert_eq!(code, 1);
    insta::assert_snapshot!(output);
}

#[test]
fn validate_bad_profile_as_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("taint-bad-effect.toml"), dir.path().join("t.toml")).unwrap();
    let (code, output) = run(
        &["validate", "--profile", "t.toml", "--output", "json"],
        dir.path(),
    );
    assert_eq!(code, 1);
    insta::assert_snapshot!(output);
}

#[test]
fn validate_unknown_profile_name() {
    let dir = tempfile::tempdir().unwrap();
    let (code, output) = run(&["validate", "--profile", "a100"], dir.path());
    assert_eq!(code, 1);
    insta::assert_snapshot!(output);
}

#[test]
fn validate_warnings_exit_zero_and_quiet_hides_them() {
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../../profiles/mlops.toml").replace("mode = \"operator\"", "");
    let text = text.replace(
        "disks = { os_gb = 200 }",
        "disks = { os_gb = 200 }\ngpus = { count = 1, filter = \"10de:2489\" }",
    );
    std::fs::write(dir.path().join("w.toml"), text).unwrap();
    let (code, output) = run(&["validate", "--profile", "w.toml"], dir.path());
    assert_eq!(code, 0, "{output}");
    insta::assert_snapshot!(output);
    let (code, quiet) = run(&["-q", "validate", "--profile", "w.toml"], dir.path());
    assert_eq!(code, 0);
    assert!(!quiet.contains("warning:"), "{quiet}");
}

#[test]
fn init_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (code, first) = run(&["init"], dir.path());
    assert_eq!(code, 0);
    std::fs::write(
        dir.path().join("provision.toml"),
        "[proxmox]\nendpoint = \"https://pve1:8006\"\n",
    )
    .unwrap();
    let (code, second) = run(&["init"], dir.path());
    assert_eq!(code, 0);
    insta::assert_snapshot!(format!("{first}\n===== second run =====\n{second}"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("provision.toml")).unwrap(),
        "[proxmox]\nendpoint = \"https://pve1:8006\"\n",
        "init must keep user edits"
    );
    let gitignore = std::fs::read_to_string(dir.path().join(".gitignore")).unwrap();
    assert!(
        gitignore.contains(".provision/")
            && gitignore.contains("*.token")
            && gitignore.contains("kubeconfig")
    );
}

#[test]
fn init_into_a_directory_writes_the_commented_template() {
    let dir = tempfile::tempdir().unwrap();
    let (code, output) = run(&["init", "ws", "--output", "json"], dir.path());
    assert_eq!(code, 0, "{output}");
    let template = std::fs::read_to_string(dir.path().join("ws/provision.toml")).unwrap();
    for variable in [
        "PROXMOX_VE_ENDPOINT",
        "PROXMOX_VE_API_TOKEN",
        "PROXMOX_VE_USERNAME",
        "PROXMOX_VE_PASSWORD",
        "PROXMOX_VE_INSECURE",
    ] {
        assert!(template.contains(variable), "{variable} missing");
    }
    insta::assert_snapshot!(output);
}

#[test]
fn completions_for_every_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, output) = run(&["completions", shell], dir.path());
        assert_eq!(code, 0, "{shell}");
        assert!(output.contains("validate"), "{shell}: {output}");
    }
    let (code, _) = run(&["completions", "tcsh"], dir.path());
    assert_eq!(code, 1);
}

/// `--guests` is a test facility: accepted (it still needs `--simulate`), but not in `--help`.
#[test]
fn guests_option_is_hidden_but_accepted() {
    let dir = tempfile::tempdir().unwrap();
    for verb in ["up", "down"] {
        let (code, output) = run(&[verb, "--help"], dir.path());
        assert_eq!(code, 0, "{output}");
        assert!(!output.contains("--guests"), "{output}");
    }
    let up = Provision::new(&["up", "--profile", "homelab-ha", "--guests", "testbed"])
        .cwd(dir.path())
        .run();
    provision_snapshot!(up, &[(dir.path(), "[TEMP]")]);
}

/// `provision man` prints the page with every subcommand and its examples; `--dir` writes one
/// page per subcommand, nested ones included.
#[test]
fn man_prints_the_page_and_writes_one_per_subcommand() {
    let page = Provision::new(&["man"]).run();
    assert_eq!(page.code, 0, "{}", page.stderr);
    assert!(page.stdout.contains(".TH provision 1"), "{}", page.stdout);
    assert!(page.stdout.contains("Exit codes"), "{}", page.stdout);
    let dir = tempfile::tempdir().unwrap();
    let written = Provision::new(&["man", "--dir", dir.path().to_str().unwrap()]).run();
    assert_eq!(written.code, 0, "{}", written.stderr);
    for name in ["provision.1", "provision-up.1", "provision-profiles-show.1"] {
        let text = std::fs::read_to_string(dir.path().join(name))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(text.contains(".TH"), "{name}");
    }
    let up = std::fs::read_to_string(dir.path().join("provision-up.1")).unwrap();
    assert!(up.contains("Examples:"), "{up}");
    assert!(up.contains("\\-\\-simulate"), "{up}");
}
