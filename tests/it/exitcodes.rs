//! Exit codes a script relies on: `plan --detailed-exitcode` (0 no changes, 2 changes, 1 any
//! error, as terraform) and a closed stdout ending the run quietly with the command's status.
#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::process::Stdio;

use crate::support::cli::BinaryWorkspace;

const SIM: [&str; 3] = ["--simulate", "--sim-time-scale", "0.005"];

fn with_sim<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [args, &SIM[..]].concat()
}

#[test]
fn detailed_exitcode_says_changes_no_changes_and_errors() {
    let binary = BinaryWorkspace::new();
    let plan = with_sim(&["plan", "--profile", "ci-nested", "--detailed-exitcode"]);

    let (code, stdout, stderr) = binary.run(&plan);
    assert_eq!(
        code, 2,
        "a fresh workspace has everything to create\n{stdout}{stderr}"
    );
    assert!(stdout.contains("to create"), "{stdout}");

    // Without the flag the same plan succeeds with 0.
    let (code, _, stderr) = binary.run(&with_sim(&["plan", "--profile", "ci-nested"]));
    assert_eq!(code, 0, "{stderr}");

    let (code, _, stderr) = binary.run(&with_sim(&["up", "--profile", "ci-nested"]));
    assert_eq!(code, 0, "{stderr}");

    let (code, stdout, stderr) = binary.run(&plan);
    assert_eq!(code, 0, "up left nothing to change\n{stdout}{stderr}");
    assert!(stdout.contains("No changes"), "{stdout}");

    let destroy = [&plan[..], &["--destroy"][..]].concat();
    let (code, stdout, stderr) = binary.run(&destroy);
    assert_eq!(code, 2, "up's VMs are there to destroy\n{stdout}{stderr}");
    assert!(stdout.contains("to destroy"), "{stdout}");

    let (code, _, stderr) = binary.run(&with_sim(&["down", "--profile", "ci-nested", "--yes"]));
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = binary.run(&destroy);
    assert_eq!(code, 0, "down left nothing to destroy\n{stdout}{stderr}");
}

#[test]
fn detailed_exitcode_makes_every_error_one() {
    let binary = BinaryWorkspace::new();
    let bad = binary.file("bad.toml", "[cluster]\nname = \"x\"\nno_such_field = 1\n");
    let (code, _, stderr) = binary.run(&with_sim(&[
        "plan",
        "--profile",
        &bad,
        "--detailed-exitcode",
    ]));
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.is_empty());

    // Without an endpoint and without --simulate: still 1 with the flag.
    let (code, _, stderr) = binary.run(&["plan", "--profile", "ci-nested", "--detailed-exitcode"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("PROXMOX_VE_ENDPOINT"), "{stderr}");
}

#[test]
fn a_closed_stdout_ends_quietly_with_the_commands_status() {
    let binary = BinaryWorkspace::new();
    let own = |args: &[&'static str]| args.to_vec();
    // Every command that writes data on stdout, the long outputs among them.
    for args in [
        with_sim(&["plan", "--profile", "ci-nested", "--output", "json"]),
        with_sim(&["plan", "--profile", "ci-nested"]),
        with_sim(&["plan", "--profile", "ci-nested", "--destroy"]),
        with_sim(&["status", "--profile", "ci-nested"]),
        with_sim(&["doctor", "--profile", "ci-nested"]),
        own(&["profiles"]),
        own(&["profiles", "show", "a100-8x"]),
        own(&["profiles", "docs"]),
        own(&["validate", "--profile", "a100-8x", "--output", "json"]),
        own(&["completions", "bash"]),
        own(&["man"]),
        own(&["kubeconfig"]),
        own(&["--help"]),
        own(&["up", "--help"]),
    ] {
        // What the command ends with when its output is read: the closed pipe must not change it.
        let (expected, _, _) = binary.run(&args);
        let mut child = binary
            .provision(&args)
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before provision writes anything (`| head -0`).
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        if expected == 0 {
            assert!(!stderr.contains("error"), "{args:?}: {stderr}");
        }
    }
}

/// First contact with a real endpoint: each credential problem gets its own hint, and none of
/// them is "set an endpoint" once one is set.
#[test]
fn each_credential_problem_gets_its_own_hint() {
    let binary = BinaryWorkspace::new();
    let plan = ["plan", "--profile", "ci-nested"];
    let hint = |env: &[(&str, &str)]| {
        let run = env
            .iter()
            .fold(binary.provision(&plan), |command, (key, value)| {
                command.env(key, value)
            })
            .run();
        assert_eq!(run.code, 1, "{env:?}: {}", run.stderr);
        run.stderr
            .lines()
            .find_map(|line| line.trim().strip_prefix("= hint: "))
            .unwrap_or_else(|| panic!("{env:?}: no hint in {}", run.stderr))
            .to_owned()
    };
    let endpoint = ("PROXMOX_VE_ENDPOINT", "https://pve.example:8006/");
    let missing = hint(&[]);
    assert!(missing.contains("PROXMOX_VE_ENDPOINT"), "{missing}");
    assert!(missing.contains("--simulate"), "{missing}");
    let malformed = hint(&[endpoint, ("PROXMOX_VE_API_TOKEN", "not-a-token")]);
    assert!(
        malformed.contains("USER@REALM!TOKENID=SECRET"),
        "{malformed}"
    );
    let no_credentials = hint(&[endpoint]);
    assert!(
        no_credentials.contains("pveum user token add"),
        "{no_credentials}"
    );
    let fingerprint = hint(&[
        endpoint,
        ("PROXMOX_VE_API_TOKEN", "provision@pve!ci=s3cr3t"),
        ("PROXMOX_VE_FINGERPRINT", "AB:CD"),
    ]);
    assert!(fingerprint.contains("pvenode cert info"), "{fingerprint}");
    let http = hint(&[
        ("PROXMOX_VE_ENDPOINT", "http://pve.example:8006/"),
        ("PROXMOX_VE_API_TOKEN", "provision@pve!ci=s3cr3t"),
    ]);
    assert!(http.contains("https://"), "{http}");
    let hints = [&missing, &malformed, &no_credentials, &fingerprint, &http];
    for (index, one) in hints.iter().enumerate() {
        assert!(
            hints[index + 1..].iter().all(|other| other != one),
            "{one} given twice"
        );
    }
    for one in &hints[1..] {
        assert!(!one.contains("--simulate"), "{one}");
    }
}
