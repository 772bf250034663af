//! The russh executor against real OpenSSH servers on the testbed (skipped loudly without root/nspawn).
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::Path;
use std::time::{Duration, Instant};

use provision::ssh::{
    ClientKey, HostKeyPolicy, JumpHost, RemoteExec, RusshExec, SshError, SshOptions, SshTarget,
    run_bounded,
};
use russh::keys::PublicKey;

use crate::support::testbed::{TestHost, Testbed};

fn target(host: &TestHost) -> SshTarget {
    SshTarget::new(&host.name, &host.address, host.ssh_port, "root")
}

fn key(testbed: &Testbed) -> ClientKey {
    ClientKey::File {
        path: testbed.client_key_path.clone(),
        passphrase: None,
    }
}

fn expected(testbed: &Testbed, host: &TestHost) -> HostKeyPolicy {
    let public = PublicKey::from_openssh(testbed.host_public_key(&host.name).trim()).unwrap();
    HostKeyPolicy::Expected(vec![public])
}

fn quick() -> SshOptions {
    SshOptions {
        connect_timeout: Duration::from_secs(5),
        attempt_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(30),
        ..SshOptions::default()
    }
}

async fn connect(testbed: &Testbed, host: &TestHost, options: SshOptions) -> RusshExec {
    RusshExec::connect(
        target(host),
        &key(testbed),
        expected(testbed, host),
        options,
        None,
    )
    .await
    .unwrap()
}

fn fingerprint_by_ssh_keygen(public_key: &str, dir: &Path) -> String {
    let file = dir.join("host.pub");
    std::fs::write(&file, public_key).unwrap();
    let output = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[tokio::test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
async fn ssh_runs_commands_with_stdin_stdout_stderr_and_status() {
    let Some(testbed) = Testbed::ensure(2) else {
        return;
    };
    let exec = connect(&testbed, &testbed.hosts[0], quick()).await;
    let output = exec
        .run("echo out; echo err >&2; hostname; exit 7", None)
        .await
        .unwrap();
    assert_eq!(output.exit_status, 7);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out\ntb1\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");
    let echoed = exec
        .run("sha256sum", Some(b"hello\n".as_slice()))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&echoed.stdout)
            .starts_with("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"),
        "{echoed:?}"
    );
    assert_eq!(exec.host(), "tb1");
}

#[tokio::test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
async fn ssh_write_file_is_verified_atomic_and_readable() {
    let Some(testbed) = Testbed::ensure(2) else {
        return;
    };
    let exec = connect(&testbed, &testbed.hosts[1], quick()).await;
    let data: Vec<u8> = (0..3_000_000u32).map(|n| (n * 7 % 251) as u8).collect();
    let dir = format!("/root/provision-it-{}", std::process::id());
    let path = format!("{dir}/sub dir/blob");
    let started = Instant::now();
    exec.write_file(&path, &data, 0o640).await.unwrap();
    eprintln!("uploaded 3 MB in {:?}", started.elapsed());
    let local_sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&data))
    };
    let remote = testbed.ssh_ok(
        "tb2",
        &format!("sha256sum '{path}' | cut -d' ' -f1; stat -c %a '{path}'; ls -A '{dir}/sub dir'"),
    );
    assert_eq!(
        remote,
        format!("{local_sha}\n640\nblob\n"),
        "no staged file left behind"
    );
    assert_eq!(exec.read_file(&path).await.unwrap(), data);
    // Overwriting keeps a single file, with the new content and mode.
    exec.write_file(&path, b"second\n", 0o600).await.unwrap();
    assert_eq!(
        testbed.ssh_ok("tb2", &format!("cat '{path}'; stat -c %a '{path}'")),
        "second\n600\n"
    );
    let missing = exec.read_file(&format!("{dir}/nope")).await.unwrap_err();
    assert!(missing.to_string().contains("tb2"), "{missing}");
    testbed.ssh_ok("tb2", &format!("rm -rf '{dir}'"));
}

#[tokio::test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
async fn ssh_wrong_host_key_is_refused_naming_host_and_both_fingerprints() {
    let Some(testbed) = Testbed::ensure(2) else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let host = &testbed.hosts[0];
    // tb2's key is a real key, but not tb1's.
    let wrong = testbed.host_public_key("tb2");
    let policy = HostKeyPolicy::Expected(vec![PublicKey::from_openssh(wrong.trim()).unwrap()]);
    let started = Instant::now();
    let error = RusshExec::connect(target(host), &key(&testbed), policy, quick(), None)
        .await
        .err()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a key mismatch must not be retried"
    );
    assert!(matches!(error, SshError::HostKeyMismatch { .. }), "{error}");
    let message = error.to_string();
    let expected_fp = fingerprint_by_ssh_keygen(&wrong, scratch.path());
    let actual_fp = fingerprint_by_ssh_keygen(&testbed.host_public_key("tb1"), scratch.path());
    assert!(message.contains("tb1 (10.77.0.11:22)"), "{message}");
    assert!(message.contains(&expected_fp), "{message}");
    assert!(message.contains(&actual_fp), "{message}");
}

#[tokio::test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
async fn ssh_known_hosts_refuses_unknown_then_accepts_new_explicitly() {
    let Some(testbed) = Testbed::ensure(2) else {
        return;
    };
    let workspace = tempfile::tempdir().unwrap();
    let file = workspace.path().join("known_hosts");
    let host = &testbed.hosts[1];
    let policy = |accept_new| HostKeyPolicy::KnownHosts {
        file: file.clone(),
        accept_new,
    };
    let error = RusshExec::connect(target(host), &key(&testbed), policy(false), quick(), None)
        .await
        .err()
        .unwrap();
    assert!(matches!(error, SshError::HostKeyUnknown { .. }), "{error}");
    assert!(
        error.to_string().contains("--accept-new-host-keys"),
        "{error}"
    );
    assert!(!file.exists(), "refusing must not record anything");

    let exec = RusshExec::connect(target(host), &key(&testbed), policy(true), quick(), None)
        .await
        .unwrap();
    assert_eq!(exec.run("true", None).await.unwrap().exit_status, 0);
    let recorded = std::fs::read_to_string(&file).unwrap();
    let host_key = testbed.host_public_key("tb2");
    let key_fields: Vec<&str> = host_key.split_whitespace().take(2).collect();
    assert_eq!(recorded, format!("10.77.0.12 {}\n", key_fields.join(" ")));

    // Now known: accepted without accept_new, and the file is unchanged.
    RusshExec::connect(target(host), &key(&testbed), policy(false), quick(), None)
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), recorded);
}

#[tokio::test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
async fn ssh_crashed_host_gives_named_error_and_reconnects_after_restart() {
    let Some(testbed) = Testbed::exclusive(1) else {
        return;
    };
    let host = testbed.hosts[0].clone();
    let exec = connect(&testbed, &host, quick()).await;
    let boot_before = exec
        .run(
            "cat /proc/sys/kernel/random/boot_id; cat /etc/machine-id",
            None,
        )
        .await
        .unwrap();
    exec.write_file("/root/kept", b"survives\n", 0o644)
        .await
        .unwrap();
    testbed.crash(&host.name);
    let error = exec.run("true", None).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&format!("{} ({}:22)", host.name, host.address)),
        "{message}"
    );
    assert!(
        matches!(
            error,
            SshError::Timeout { .. } | SshError::ConnectionLost { .. }
        ),
        "{error:?}"
    );
    testbed.start(&host.name);
    // The executor reconnects by itself (the host needs a moment to boot).
    let options_wait = exec.run("cat /root/kept", None).await;
    let output = match options_wait {
        Ok(output) => output,
        Err(_) => {
            testbed.wait_ssh(&host.name, 30);
            exec.run("cat /root/kept", None).await.unwrap()
        }
    };
    assert_eq!(String::from_utf8_lossy(&output.stdout), "survives\n");
    let boot_after = exec.run("cat /etc/machine-id", None).await.unwrap();
    assert!(
        String::from_utf8_lossy(&boot_before.stdout)
            .ends_with(&*String::from_utf8_lossy(&boot_after.stdout)),
        "same machine after power loss"
    );
}

#[tokio::test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
async fn ssh_partitioned_host_times_out_naming_host_and_recovers_after_heal() {
    let Some(testbed) = Testbed::exclusive(1) else {
        return;
    };
    let host = testbed.hosts[0].clone();
    let exec = connect(&testbed, &host, quick()).await;
    assert_eq!(exec.run("true", None).await.unwrap().exit_status, 0);
    testbed.partition(&host.name);
    let started = Instant::now();
    let error = exec
        .run_with_timeout("echo unreachable", None, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(6));
    let message = error.to_string();
    assert!(matches!(error, SshError::Timeout { .. }), "{error:?}");
    assert!(
        message.contains("timed out after 3s on") && message.contains(&host.address),
        "{message}"
    );
    // A fresh connection attempt is bounded too, and says what it waited for.
    let error = exec.run("true", None).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "timed out after 5s on {} ({}:22) waiting for ssh to accept connections",
            host.name, host.address
        )),
        "{message}"
    );
    testbed.heal(&host.name);
    assert_eq!(exec.run("true", None).await.unwrap().exit_status, 0);
}

#[tokio::test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
async fn ssh_through_a_jump_host_and_in_parallel() {
    let Some(testbed) = Testbed::ensure(2) else {
        return;
    };
    let jump = JumpHost {
        target: target(&testbed.hosts[0]),
        key: key(&testbed),
        policy: expected(&testbed, &testbed.hosts[0]),
    };
    let via_jump = RusshExec::connect(
        target(&testbed.hosts[1]),
        &key(&testbed),
        expected(&testbed, &testbed.hosts[1]),
        quick(),
        Some(jump),
    )
    .await
    .unwrap();
    // sshd on tb2 sees the connection coming from tb1.
    let output = via_jump
        .run("echo $SSH_CLIENT | cut -d' ' -f1", None)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "10.77.0.11\n");

    let hostnames = run_bounded(testbed.hosts.clone(), 2, |host| {
        let testbed = testbed.clone();
        async move {
            let exec = connect(&testbed, &host, quick()).await;
            let output = exec.run("hostname", None).await.unwrap();
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        }
    })
    .await;
    assert_eq!(hostnames, vec!["tb1", "tb2"]);
}
