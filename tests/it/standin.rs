//! The k3s stand-in (scripts/k3s-standin/k3s) on real test hosts, without provision: its datastore is a real
//! etcd cluster (Debian's etcd 3.4), so joins as learners, member removal, quorum loss and snapshots are
//! etcd's own behaviour, and its kubectl follows kubectl's drain semantics. The stand-in is NOT k3s:
//! production runs real k3s; these tests hold the stand-in to the k3s facts day-2 code relies on.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::testbed::Testbed;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn unit(name: &str, command: &str) -> String {
    format!(
        "[Unit]\nDescription={name} (stand-in)\n[Service]\nType=notify\nExecStart=/usr/local/bin/k3s {command}\n\
         KillMode=process\nRestart=always\nRestartSec=2\n[Install]\nWantedBy=multi-user.target\n"
    )
}

/// Installs the stand-in as /usr/local/bin/k3s with `config` and the k3s (or k3s-agent) unit, not started.
fn install(testbed: &Testbed, host: &str, agent: bool, config: &str) {
    let (name, command) = if agent {
        ("k3s-agent", "agent")
    } else {
        ("k3s", "server")
    };
    testbed.ssh_ok(
        host,
        &format!(
            "install -m 0755 /usr/local/lib/k3s-standin/k3s /usr/local/bin/k3s && mkdir -p /etc/rancher/k3s && \
             printf '%s' '{config}' > /etc/rancher/k3s/config.yaml && \
             printf '%s' '{}' > /etc/systemd/system/{name}.service && systemctl daemon-reload",
            unit(name, command)
        ),
    );
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn wait_until(what: &str, seconds: u64, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(seconds),
            "timed out after {seconds}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `etcdctl member list` on `host`: (name, is learner) per member; an unstarted member has an empty name.
fn members(testbed: &Testbed, host: &str) -> Vec<(String, bool)> {
    let json = testbed.ssh_ok(host, "ETCDCTL_API=3 etcdctl member list -w json");
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut members: Vec<(String, bool)> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_owned(),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    members.sort();
    members
}

fn member_nodes(testbed: &Testbed, host: &str) -> Vec<String> {
    members(testbed, host)
        .into_iter()
        .map(|(name, learner)| {
            assert!(!learner, "{name} is still a learner");
            name.rsplit_once('-')
                .map(|(node, _)| node.to_owned())
                .unwrap_or(name)
        })
        .collect()
}

fn kubectl_json(testbed: &Testbed, host: &str, args: &str) -> serde_json::Value {
    serde_json::from_str(&testbed.ssh_ok(host, &format!("k3s kubectl {args} -o json"))).unwrap()
}

#[test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
fn standin_servers_form_a_real_etcd_cluster_with_learners_removal_and_quorum() {
    let Some(testbed) = Testbed::exclusive(4) else {
        return;
    };
    let started = Instant::now();
    let names: Vec<String> = testbed.hosts.iter().map(|h| h.name.clone()).collect();
    let (s1, s2, s3, s4) = (&names[0], &names[1], &names[2], &names[3]);
    install(
        &testbed,
        s1,
        false,
        &format!("cluster-init: true\ntoken: {SECRET}\n"),
    );
    testbed.ssh_ok(s1, "systemctl start k3s");
    let token = testbed
        .ssh_ok(s1, "cat /var/lib/rancher/k3s/server/token")
        .trim()
        .to_owned();
    let join = format!(
        "server: https://{}:6443\ntoken: {token}\n",
        testbed.hosts[0].address
    );
    for server in [s2, s3] {
        install(&testbed, server, false, &join);
        testbed.ssh_ok(server, "systemctl start k3s");
    }
    // 1. Three started voting members; each joiner was a learner first, then promoted.
    assert_eq!(
        member_nodes(&testbed, s1),
        vec![s1.clone(), s2.clone(), s3.clone()]
    );
    let journal = testbed.ssh_ok(s2, "journalctl -u k3s --no-pager -o cat");
    let learner = journal
        .find("added as learner (isLearner=true)")
        .expect(&journal);
    let promoted = journal.find("promoted to voting member").expect(&journal);
    assert!(learner < promoted, "{journal}");
    let nodes = kubectl_json(&testbed, s3, "get nodes");
    assert_eq!(nodes["items"].as_array().unwrap().len(), 3, "{nodes:#}");
    // The datastore is etcd: the Node is a JSON value under /registry/nodes/.
    let raw = testbed.ssh_ok(
        s2,
        &format!("ETCDCTL_API=3 etcdctl get /registry/nodes/{s1} --print-value-only"),
    );
    assert!(raw.contains(&format!("\"name\": \"{s1}\"")), "{raw}");
    eprintln!("3 servers after {:?}", started.elapsed());

    // 2. Snapshots through etcdctl, listed like k3s.
    let saved = testbed.ssh_ok(s1, "k3s etcd-snapshot save --name pre-change");
    assert!(
        saved.contains("/var/lib/rancher/k3s/server/db/snapshots/pre-change-"),
        "{saved}"
    );
    let listed = testbed.ssh_ok(s1, "k3s etcd-snapshot ls");
    assert!(
        listed.starts_with("Name")
            && listed.contains("file:///var/lib/rancher/k3s/server/db/snapshots/pre-change-"),
        "{listed}"
    );
    testbed.ssh_ok(
        s1,
        "ETCDCTL_API=3 etcdctl snapshot status /var/lib/rancher/k3s/server/db/snapshots/pre-change-* >/dev/null",
    );

    // 3. With a member down, etcd admits no new member: the join waits on "etcdserver: unhealthy cluster".
    testbed.ssh_ok(s3, "systemctl stop k3s");
    install(&testbed, s4, false, &join);
    let (_, stderr) = text(&testbed.ssh(s4, "timeout 12 k3s server"));
    assert!(stderr.contains("etcdserver: unhealthy cluster"), "{stderr}");
    assert_eq!(members(&testbed, s1).len(), 3, "no member was added");
    testbed.ssh_ok(s4, "rm -rf /var/lib/rancher/k3s/server/db");

    // 4. Deleting the dead server's Node removes its member and its node-password Secret; the removed
    //    server refuses to start until its db is wiped; then the replacement joins.
    let deleted = testbed.ssh_ok(s1, &format!("k3s kubectl delete node {s3}"));
    assert_eq!(deleted, format!("node \"{s3}\" deleted\n"));
    assert_eq!(member_nodes(&testbed, s1), vec![s1.clone(), s2.clone()]);
    let secrets = testbed.ssh_ok(s1, "k3s kubectl get secrets -n kube-system -o name");
    assert!(
        !secrets.contains(&format!("{s3}.node-password.k3s")),
        "{secrets}"
    );
    let refused = testbed.ssh(s3, "timeout 20 k3s server");
    let (_, stderr) = text(&refused);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("member has been permanently removed"),
        "{stderr}"
    );
    testbed.ssh_ok(s4, "systemctl start k3s");
    assert_eq!(
        member_nodes(&testbed, s1),
        vec![s1.clone(), s2.clone(), s4.clone()]
    );
    eprintln!("member replaced after {:?}", started.elapsed());

    // 5. A stale member with the server's node name makes its rejoin fail with "duplicate node name found".
    testbed.ssh_ok(
        s2,
        "systemctl stop k3s && rm -rf /var/lib/rancher/k3s/server/db",
    );
    let (_, stderr) = text(&testbed.ssh(s2, "timeout 20 k3s server"));
    assert!(stderr.contains("duplicate node name found"), "{stderr}");
    testbed.ssh_ok(s1, &format!("k3s kubectl delete node {s2}"));
    testbed.ssh_ok(
        s2,
        "rm -rf /var/lib/rancher/k3s/server/db && systemctl start k3s",
    );
    assert_eq!(
        member_nodes(&testbed, s1),
        vec![s1.clone(), s2.clone(), s4.clone()]
    );

    // 6. A partitioned minority cannot write, while the majority goes on.
    testbed.ssh_ok(
        s4,
        &format!(
            "setsid -f sh -c 'sleep 2; k3s kubectl label node {s4} side=minority >/root/minority.out 2>&1; \
             echo exit=$? >>/root/minority.out' </dev/null >/dev/null 2>&1"
        ),
    );
    testbed.partition(s4);
    std::thread::sleep(Duration::from_secs(3));
    testbed.ssh_ok(s1, &format!("k3s kubectl label node {s1} side=majority"));
    std::thread::sleep(Duration::from_secs(20));
    testbed.heal(s4);
    testbed.wait_ssh(s4, 30);
    let minority = testbed.ssh_ok(s4, "cat /root/minority.out");
    assert!(
        minority.starts_with("Error from server: etcdserver:") && minority.ends_with("exit=1\n"),
        "{minority}"
    );
    wait_until("the healed member to catch up", 30, || {
        testbed
            .ssh(
                s4,
                &format!("k3s kubectl get node {s1} -o json | grep -q '\"side\": \"majority\"'"),
            )
            .status
            .success()
    });

    // 7. Quorum loss is real: with 2 of 3 members stopped writes fail; one back restores them.
    std::thread::sleep(Duration::from_secs(6)); // etcd wants every member connected for 5 s before changes
    testbed.ssh_ok(s2, "systemctl stop k3s");
    testbed.ssh_ok(s4, "systemctl stop k3s");
    let write = format!("k3s kubectl label node {s1} quorum=lost");
    let failed = testbed.ssh(s1, &write);
    let (_, stderr) = text(&failed);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("Error from server: etcdserver:"),
        "{stderr}"
    );
    let readyz = testbed.ssh(s1, "k3s kubectl get --raw /readyz");
    assert!(!readyz.status.success());
    testbed.ssh_ok(s4, "systemctl start k3s");
    wait_until("writes after quorum came back", 60, || {
        testbed.ssh(s1, &write).status.success()
    });
    assert_eq!(
        testbed.ssh_ok(s1, "k3s kubectl get --raw /readyz").trim(),
        "ok"
    );
    testbed.ssh_ok(s2, "systemctl start k3s");
    eprintln!("quorum lost and restored after {:?}", started.elapsed());

    // 8. The removal annotation removes a member without deleting the Node and records its name.
    std::thread::sleep(Duration::from_secs(6));
    testbed.ssh_ok(
        s1,
        &format!("k3s kubectl annotate node {s4} etcd.k3s.cattle.io/remove=true"),
    );
    wait_until("the annotated member to go", 30, || {
        member_nodes(&testbed, s1) == vec![s1.clone(), s2.clone()]
    });
    let node = kubectl_json(&testbed, s1, &format!("get node {s4}"));
    let removed = node["metadata"]["annotations"]["etcd.k3s.cattle.io/removed-node-name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(removed.starts_with(&format!("{s4}-")), "{node:#}");
    wait_until("the removed server's k3s to exit", 30, || {
        testbed
            .ssh(s4, "journalctl -u k3s --no-pager -o cat | grep -q 'member has been permanently removed'")
            .status
            .success()
    });
    eprintln!("etcd scenario done in {:?}", started.elapsed());
}

const WORKLOAD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: svclb-traefik-x1
  namespace: kube-system
  ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: svclb-traefik, controller: true}]
spec: {nodeName: NODE}
---
apiVersion: v1
kind: Pod
metadata: {name: bare, namespace: default}
spec: {nodeName: NODE}
---
apiVersion: v1
kind: Pod
metadata:
  name: cache-7d9f8-abcde
  labels: {app: cache}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: cache-7d9f8, controller: true}]
spec:
  nodeName: NODE
  volumes: [{name: scratch, emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: web-5c6b7-aaaaa
  labels: {app: web}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5c6b7, controller: true}]
spec: {nodeName: NODE}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data-db-0
  annotations: {volume.kubernetes.io/selected-node: NODE}
spec: {storageClassName: local-path, accessModes: [ReadWriteOnce]}
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  labels: {app: db}
  ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: db, controller: true}]
spec:
  nodeName: NODE
  volumes: [{name: data, persistentVolumeClaim: {claimName: data-db-0}}]
"#;

#[test]
#[ignore = "needs root and the test hosts (scripts/testbed.sh): .ci/run runs it"]
fn standin_kubectl_drain_follows_kubectl_and_node_passwords_guard_names() {
    let Some(testbed) = Testbed::exclusive(3) else {
        return;
    };
    let started = Instant::now();
    let names: Vec<String> = testbed.hosts.iter().map(|h| h.name.clone()).collect();
    let (server, worker, other) = (&names[0], &names[1], &names[2]);
    install(
        &testbed,
        server,
        false,
        &format!("cluster-init: true\ntoken: {SECRET}\n"),
    );
    testbed.ssh_ok(server, "systemctl start k3s");
    let token = testbed
        .ssh_ok(server, "cat /var/lib/rancher/k3s/server/token")
        .trim()
        .to_owned();
    let join = format!(
        "server: https://{}:6443\ntoken: {token}\n",
        testbed.hosts[0].address
    );
    for agent in [worker, other] {
        install(&testbed, agent, true, &join);
        testbed.ssh_ok(agent, "systemctl start k3s-agent");
    }
    let workload = WORKLOAD.replace("NODE", worker);
    let applied = testbed.ssh_ok(
        server,
        &format!("printf '%s' '{workload}' > /root/workload.yaml && k3s kubectl apply -f /root/workload.yaml"),
    );
    assert!(
        applied.contains("pod/bare created")
            && applied.contains("poddisruptionbudget.policy/web created"),
        "{applied}"
    );
    let pdb = kubectl_json(&testbed, server, "get pdb web");
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0, "{pdb:#}");

    // 1. Without flags: cordoned, then refused for the DaemonSet pod, the bare pod and the emptyDir pod.
    let drain = format!("k3s kubectl drain {worker}");
    let (stdout, stderr) = text(&testbed.ssh(server, &drain));
    assert_eq!(stdout, format!("node/{worker} cordoned\n"));
    assert!(
        stderr.starts_with(&format!(
            "error: unable to drain node \"{worker}\" due to error:"
        )),
        "{stderr}"
    );
    for line in [
        "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): kube-system/svclb-traefik-x1",
        "cannot delete Pods declare no controller (use --force to override): default/bare",
        "cannot delete Pods with local storage (use --delete-emptydir-data to override): default/cache-7d9f8-abcde",
    ] {
        assert!(stderr.lines().any(|l| l == line), "{line}\n{stderr}");
    }
    assert_eq!(testbed.ssh(server, &drain).status.code(), Some(1));
    let node = kubectl_json(&testbed, server, &format!("get node {worker}"));
    assert_eq!(node["spec"]["unschedulable"], true, "{node:#}");
    let (_, stderr) = text(&testbed.ssh(server, &format!("{drain} --ignore-daemonsets --force")));
    assert!(
        stderr.contains("cannot delete Pods with local storage")
            && !stderr.contains("DaemonSet")
            && !stderr.contains("no controller"),
        "{stderr}"
    );

    // 2. A client dry run changes nothing.
    let all_flags = "--ignore-daemonsets --force --delete-emptydir-data --grace-period 10";
    let dry = testbed.ssh_ok(server, &format!("{drain} {all_flags} --dry-run=client"));
    assert!(
        dry.contains("evicting pod default/bare (dry run)") && dry.ends_with("drained (dry run)\n"),
        "{dry}"
    );
    assert_eq!(
        kubectl_json(&testbed, server, "get pods -A")["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    // 3. The PDB holds the web pod: retried every 5 s with kubectl's message until --timeout, exit 1.
    let blocked = testbed.ssh(server, &format!("{drain} {all_flags} --timeout 12s"));
    let (stdout, stderr) = text(&blocked);
    assert_eq!(blocked.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("Warning: ")
            && stderr.contains("ignoring DaemonSet-managed Pods: kube-system/svclb-traefik-x1"),
        "{stderr}"
    );
    assert!(stderr.contains("error when evicting pods/\"web-5c6b7-aaaaa\" -n \"default\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."), "{stderr}");
    assert!(
        stderr.matches("will retry after 5s").count() >= 2,
        "{stderr}"
    );
    assert!(
        stderr.contains("global timeout reached: 12s")
            && stderr.contains(&format!("error: unable to drain node \"{worker}\"")),
        "{stderr}"
    );
    assert!(
        stdout.contains("pod/bare evicted") && stdout.contains("pod/db-0 evicted"),
        "{stdout}"
    );
    let pods = kubectl_json(&testbed, server, "get pods -A");
    let pods = pods["items"].as_array().unwrap();
    let by_name = |name: &str| pods.iter().find(|p| p["metadata"]["name"] == name).cloned();
    assert!(by_name("bare").is_none(), "a bare pod is gone for good");
    assert!(by_name("svclb-traefik-x1").is_some(), "DaemonSet pods stay");
    let cache = pods
        .iter()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("cache-7d9f8-")
                && p["metadata"]["name"] != "cache-7d9f8-abcde"
        })
        .expect("the cache pod was rescheduled");
    assert_ne!(cache["spec"]["nodeName"], worker.as_str());
    assert_eq!(cache["status"]["phase"], "Running");
    let db = by_name("db-0").expect("a StatefulSet pod comes back with its name");
    assert_eq!(db["status"]["phase"], "Pending", "{db:#}");
    assert!(
        db["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("volume node affinity conflict"),
        "{db:#}"
    );

    // 4. A second healthy web replica elsewhere lets the PDB allow one disruption: the drain completes.
    let second = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-5c6b7-bbbbb\n  labels: {{app: web}}\n  ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: web-5c6b7, controller: true}}]\nspec: {{nodeName: {other}}}\n"
    );
    testbed.ssh_ok(
        server,
        &format!("printf '%s' '{second}' | k3s kubectl apply -f -"),
    );
    assert_eq!(
        kubectl_json(&testbed, server, "get pdb web")["status"]["disruptionsAllowed"],
        1
    );
    let done = testbed.ssh_ok(server, &format!("{drain} {all_flags} --timeout 30s"));
    assert!(
        done.contains("pod/web-5c6b7-aaaaa evicted")
            && done.ends_with(&format!("node/{worker} drained\n")),
        "{done}"
    );
    let wide = testbed.ssh_ok(server, "k3s kubectl get nodes");
    assert!(wide.contains("Ready,SchedulingDisabled"), "{wide}");
    assert_eq!(
        testbed.ssh_ok(server, &format!("k3s kubectl uncordon {worker}")),
        format!("node/{worker} uncordoned\n")
    );

    // 5. Node passwords: a reinstalled machine re-using a name is refused until its Secret is deleted.
    testbed.ssh_ok(
        other,
        "systemctl stop k3s-agent && rm -f /etc/rancher/node/password",
    );
    let refused = testbed.ssh(other, "timeout 20 k3s agent");
    let (_, stderr) = text(&refused);
    assert!(!refused.status.success());
    assert!(stderr.contains("Node password rejected"), "{stderr}");
    let deleted = testbed.ssh_ok(
        server,
        &format!("k3s kubectl delete secret {other}.node-password.k3s -n kube-system"),
    );
    assert_eq!(
        deleted,
        format!("secret \"{other}.node-password.k3s\" deleted\n")
    );
    testbed.ssh_ok(other, "systemctl start k3s-agent");
    let missing = testbed.ssh(server, "k3s kubectl get node no-such-node");
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        text(&missing).1,
        "Error from server (NotFound): nodes \"no-such-node\" not found\n"
    );
    eprintln!("drain scenario done in {:?}", started.elapsed());
}
