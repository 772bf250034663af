//! The testbed itself (real systemd hosts, reboot, cloud-init seeds) and the stand-in k3s running on it.
//! The k3s here is scripts/k3s-standin/k3s, a stand-in: real k3s cannot be downloaded on test machines.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use provision::ssh::{ClientKey, HostKeyPolicy, RemoteExec, RusshExec, SshOptions, SshTarget};
use russh::keys::PublicKey;

use crate::support::testbed::Testbed;

#[test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
fn testbed_hosts_are_separate_systemd_machines() {
    let Some(testbed) = Testbed::ensure(2) else {
        return;
    };
    let one = testbed.ssh_ok(
        "tb1",
        "hostname; cat /etc/machine-id; systemctl is-system-running --wait; ps -p 1 -o comm=",
    );
    let two = testbed.ssh_ok("tb2", "hostname; cat /etc/machine-id");
    let one: Vec<&str> = one.lines().collect();
    let two: Vec<&str> = two.lines().collect();
    assert_eq!(one[0], "tb1");
    assert_eq!(two[0], "tb2");
    assert_ne!(one[1], two[1], "each host has its own machine-id");
    assert!(matches!(one[2], "running" | "degraded"), "{one:?}");
    assert_eq!(one[3], "systemd");
    assert_ne!(
        testbed.host_public_key("tb1"),
        testbed.host_public_key("tb2"),
        "each host has its own host key"
    );
    // The stand-in k3s is shipped in the base, but not where provision installs k3s.
    testbed.ssh_ok(
        "tb1",
        "test -x /usr/local/lib/k3s-standin/k3s && ! test -e /usr/local/bin/k3s",
    );
}

#[test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
fn testbed_reboot_inside_a_host_boots_it_again() {
    let Some(testbed) = Testbed::exclusive(1) else {
        return;
    };
    let name = testbed.hosts[0].name.clone();
    let before = testbed.ssh_ok(
        &name,
        "cat /proc/1/stat | cut -d' ' -f22; touch /root/marker",
    );
    // The reboot drops the connection; its status does not matter.
    let _status = testbed.ssh(&name, "systemctl reboot");
    let started = Instant::now();
    loop {
        let output = testbed.ssh(&name, "cat /proc/1/stat | cut -d' ' -f22; ls /root/marker");
        if output.status.success() {
            let after = String::from_utf8_lossy(&output.stdout).into_owned();
            if after.lines().next() != before.lines().next() {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} did not come back after reboot"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
async fn testbed_cloud_init_applies_a_nocloud_seed_on_first_boot() {
    let Some(testbed) = Testbed::exclusive_stopped(1) else {
        return;
    };
    let name = testbed.hosts[0].name.clone();
    let scratch = tempfile::tempdir().unwrap();
    // Host key pair made "by provision", handed to cloud-init.
    let host_key = scratch.path().join("host_ed25519");
    let status = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "provision-host-key",
            "-f",
        ])
        .arg(&host_key)
        .status()
        .unwrap();
    assert!(status.success());
    let private = std::fs::read_to_string(&host_key).unwrap();
    let public = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
    let client_public =
        std::fs::read_to_string(testbed.client_key_path.with_extension("pub")).unwrap();
    let indented: String = private
        .lines()
        .map(|line| format!("      {line}\n"))
        .collect();
    let user_data = format!(
        "#cloud-config\nhostname: seeded-node\nusers:\n  - name: ops\n    shell: /bin/bash\n    \
         sudo: ALL=(ALL) NOPASSWD:ALL\n    ssh_authorized_keys:\n      - {}\nssh_deletekeys: true\n\
         ssh_keys:\n  ed25519_private: |\n{indented}  ed25519_public: {}\nruncmd:\n  - touch /root/runcmd-ran\n",
        client_public.trim(),
        public.trim()
    );
    let seed = scratch.path().join("seed");
    std::fs::create_dir(&seed).unwrap();
    std::fs::write(seed.join("user-data"), user_data).unwrap();
    std::fs::write(
        seed.join("meta-data"),
        "instance-id: iid-test-1\nlocal-hostname: seeded-node\n",
    )
    .unwrap();
    std::fs::write(
        seed.join("network-config"),
        "version: 2\nethernets:\n  host0:\n    addresses: [10.77.0.99/24]\n",
    )
    .unwrap();
    testbed.seed(&name, &seed);
    let started = Instant::now();
    testbed.start(&name);
    eprintln!("started after {:?}", started.elapsed());
    let address = testbed.hosts[0].address.clone();
    let exec = RusshExec::connect(
        SshTarget::new(&name, &address, 22, "ops"),
        &ClientKey::File {
            path: testbed.client_key_path.clone(),
            passphrase: None,
        },
        HostKeyPolicy::Expected(vec![PublicKey::from_openssh(public.trim()).unwrap()]),
        SshOptions {
            connect_timeout: Duration::from_secs(90),
            become_root: true,
            ..SshOptions::default()
        },
        None,
    )
    .await
    .unwrap();
    eprintln!("connected after {:?}", started.elapsed());
    let output = exec
        .run(
            "cloud-init status --wait >/dev/null; cloud-init status; hostname; id -u; \
             ls /root/runcmd-ran; ip -br -4 addr show host0",
            None,
        )
        .await
        .unwrap();
    eprintln!("seeded host usable after {:?}", started.elapsed());
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "status: done", "{text}");
    assert_eq!(lines[1], "seeded-node");
    assert_eq!(lines[2], "0", "sudo works for the cloud-init user");
    assert_eq!(lines[3], "/root/runcmd-ran");
    // The network stage is disabled: the testbed's address stays, the seed's is ignored.
    assert!(lines[4].contains(&format!("{address}/24")), "{text}");
    // Uploads through sudo work too (staged in /tmp, moved by root).
    exec.write_file("/etc/provision-test", b"root-owned\n", 0o600)
        .await
        .unwrap();
    assert_eq!(
        testbed.ssh_ok(&name, "stat -c '%U %a' /etc/provision-test"),
        "root 600\n"
    );
}

const SERVER_UNIT: &str = "[Unit]\nDescription=k3s (stand-in)\nAfter=network-online.target\n\
[Service]\nType=notify\nExecStart=/usr/local/bin/k3s server\nKillMode=process\nRestart=always\n\
RestartSec=2\n[Install]\nWantedBy=multi-user.target\n";
const AGENT_UNIT: &str = "[Unit]\nDescription=k3s agent (stand-in)\n\
[Service]\nType=notify\nExecStart=/usr/local/bin/k3s agent\nKillMode=process\nRestart=always\n\
RestartSec=2\n[Install]\nWantedBy=multi-user.target\n";

fn install_standin(testbed: &Testbed, name: &str, unit: &str, unit_text: &str, config: &str) {
    testbed.ssh_ok(
        name,
        &format!(
            "install -m 0755 /usr/local/lib/k3s-standin/k3s /usr/local/bin/k3s && \
             mkdir -p /etc/rancher/k3s && printf '%s' '{config}' > /etc/rancher/k3s/config.yaml && \
             printf '%s' '{unit_text}' > /etc/systemd/system/{unit}.service && systemctl daemon-reload"
        ),
    );
}

#[test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
fn standin_k3s_server_and_agent_join_and_show_in_get_nodes() {
    let Some(testbed) = Testbed::exclusive(3) else {
        return;
    };
    let (server, agent, intruder) = (
        testbed.hosts[0].clone(),
        testbed.hosts[1].clone(),
        testbed.hosts[2].clone(),
    );
    let secret = "0123456789abcdef0123456789abcdef";
    install_standin(
        &testbed,
        &server.name,
        "k3s",
        SERVER_UNIT,
        &format!(
            "cluster-init: true\ntoken: {secret}\nwrite-kubeconfig-mode: \"0600\"\n\
             node-label:\n  - special.gpu=nvidia\nnode-taint:\n  - dedicated=gpu:NoSchedule\n"
        ),
    );
    // Type=notify: `systemctl start` returns once the stand-in reported READY=1.
    testbed.ssh_ok(&server.name, "systemctl enable --now k3s");
    let token = testbed.ssh_ok(&server.name, "cat /var/lib/rancher/k3s/server/token");
    assert!(
        token.starts_with("K10") && token.trim().ends_with(&format!("::server:{secret}")),
        "{token}"
    );
    assert_eq!(
        testbed.ssh_ok(
            &server.name,
            "stat -c %a /etc/rancher/k3s/k3s.yaml /var/lib/rancher/k3s/server/token"
        ),
        "600\n600\n"
    );
    install_standin(
        &testbed,
        &agent.name,
        "k3s-agent",
        AGENT_UNIT,
        &format!(
            "server: https://{}:6443\ntoken: {}\nnode-label:\n  - special.cpu=avx512\n",
            server.address,
            token.trim()
        ),
    );
    testbed.ssh_ok(&agent.name, "systemctl enable --now k3s-agent");
    let nodes = testbed.ssh_ok(&server.name, "k3s kubectl get nodes -o wide");
    let lines: Vec<&str> = nodes.lines().collect();
    assert_eq!(lines.len(), 2, "{nodes}");
    assert!(
        lines[0].starts_with(&format!(
            "{}   Ready   control-plane,etcd,master",
            server.name
        )),
        "{nodes}"
    );
    assert!(
        lines[0].contains("special.gpu=nvidia") && lines[0].contains("dedicated=gpu:NoSchedule"),
        "{nodes}"
    );
    assert!(
        lines[1].starts_with(&format!("{}   Ready   <none>", agent.name)),
        "{nodes}"
    );
    assert!(
        lines[1].contains("special.cpu=avx512") && lines[1].contains(&agent.address),
        "{nodes}"
    );
    // Later label changes go through the API.
    testbed.ssh_ok(
        &server.name,
        &format!("k3s kubectl label node {} tier=edge", agent.name),
    );
    let json = testbed.ssh_ok(
        &server.name,
        &format!("k3s kubectl get node {} -o json", agent.name),
    );
    let node: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(node["metadata"]["labels"]["tier"], "edge");
    assert_eq!(node["status"]["conditions"][0]["status"], "True");
    // A server with a different token is refused, like real k3s.
    install_standin(
        &testbed,
        &intruder.name,
        "k3s",
        SERVER_UNIT,
        &format!(
            "server: https://{}:6443\ntoken: wrong-token\n",
            server.address
        ),
    );
    let refused = testbed.ssh(&intruder.name, "timeout 20 /usr/local/bin/k3s server");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("token"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let snapshot = testbed.ssh_ok(&server.name, "k3s etcd-snapshot save");
    assert!(
        snapshot.contains("/var/lib/rancher/k3s/server/db/snapshots/on-demand-"),
        "{snapshot}"
    );
    assert!(
        testbed
            .ssh_ok(&agent.name, "k3s --version")
            .starts_with("k3s version v1.")
    );
}
