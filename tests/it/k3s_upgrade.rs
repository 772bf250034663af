//! The rolling k3s upgrade on the fake cluster: servers one at a time (each drained, restarted
//! on the new binary, at the new version, Ready and uncordoned before the next), then agents in
//! batches; an etcd snapshot first; refusals (downgrade, skipped minor) before any change; a
//! re-run finds nothing to do.
#![allow(clippy::unwrap_used)]

use provision::exec::phase2::{UpgradeOptions, rolling_upgrade};
use provision::k3s::release::Artifact;
use provision::nodeprep::sha256_hex;

use crate::support::fake_cluster::{World, world};
use crate::support::fake_etcd::EtcdConnector;

const OLD: &str = "v1.31.4+k3s1";
const NEW: &str = "v1.31.5+k3s1";
const NEW_BINARY: &[u8] = b"#!/bin/sh\n# stand-in v1.31.5+k3s1\n";

/// The fake cluster converged at [`OLD`], its connector knowing which binary runs which
/// version, and a profile asking for [`NEW`] with that binary.
async fn cluster_at_old_version() -> (World, EtcdConnector, tempfile::TempDir) {
    let mut world = world();
    world.up().await.unwrap();
    let connector = EtcdConnector::new(world.sim.clone());
    {
        let mut etcd = connector.etcd.lock().unwrap();
        etcd.binaries.insert(
            world.opts.binary.as_ref().unwrap().sha256.clone(),
            OLD.to_owned(),
        );
        etcd.binaries.insert(sha256_hex(NEW_BINARY), NEW.to_owned());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k3s");
    std::fs::write(&path, NEW_BINARY).unwrap();
    world.opts.binary = Some(Artifact {
        path,
        sha256: sha256_hex(NEW_BINARY),
    });
    world.profile.cluster.k3s_version = NEW.to_owned();
    world.take_events();
    (world, connector, dir)
}

fn options(max_unavailable: u32) -> UpgradeOptions {
    UpgradeOptions {
        max_unavailable,
        recorded: Some(OLD.to_owned()),
    }
}

#[tokio::test]
async fn a_patch_upgrade_rolls_servers_one_at_a_time_then_agents_with_a_snapshot_first() {
    let (world, connector, _dir) = cluster_at_old_version().await;
    let report = rolling_upgrade(
        &world.profile,
        &world.nodes,
        &connector,
        &world.opts,
        &options(1),
    )
    .await
    .unwrap();
    assert_eq!(report.from.as_deref(), Some(OLD));
    assert_eq!(
        report.upgraded,
        ["server-1", "server-2", "server-3", "worker-1", "worker-2"]
    );
    let events = connector.events();
    assert!(
        events[0].starts_with("snapshot provision-pre-upgrade-v1-31-5-k3s1 on server-"),
        "{events:#?}"
    );
    assert!(report.snapshot.is_some());
    // Each node in turn: drained, restarted, uncordoned before the next one is drained.
    let lifecycle: Vec<(&str, String)> = events
        .iter()
        .filter_map(|event| {
            let (verb, rest) = event.split_once(' ')?;
            let node = rest.split(' ').next()?.to_owned();
            matches!(verb, "drain" | "restart" | "uncordon").then_some((verb, node))
        })
        .collect();
    let mut expected = Vec::new();
    for node in &report.upgraded {
        for verb in ["drain", "restart", "uncordon"] {
            expected.push((verb, node.clone()));
        }
    }
    assert_eq!(lifecycle, expected, "{events:#?}");
    // A server is drained from, and waited for by, another server.
    for event in events
        .iter()
        .filter(|event| event.starts_with("drain server-"))
    {
        let words: Vec<&str> = event.split(' ').collect();
        assert_ne!(words[1], words[3], "{event}");
    }
    let versions = connector.etcd.lock().unwrap().versions.clone();
    assert!(
        world
            .nodes
            .iter()
            .all(|node| versions.get(&node.name).map(String::as_str) == Some(NEW)),
        "{versions:?}"
    );

    // Done: a second run restarts nothing.
    let again = rolling_upgrade(
        &world.profile,
        &world.nodes,
        &connector,
        &world.opts,
        &options(1),
    )
    .await
    .unwrap();
    assert!(again.upgraded.is_empty());
    assert!(
        !connector
            .events()
            .iter()
            .any(|event| event.starts_with("restart") || event.starts_with("drain"))
    );
}

#[tokio::test]
async fn agents_upgrade_in_batches_of_max_unavailable() {
    let (world, connector, _dir) = cluster_at_old_version().await;
    rolling_upgrade(
        &world.profile,
        &world.nodes,
        &connector,
        &world.opts,
        &options(2),
    )
    .await
    .unwrap();
    let events = connector.events();
    let agent_steps: Vec<&str> = events
        .iter()
        .filter(|event| event.contains("worker-"))
        .filter_map(|event| event.split(' ').next())
        .filter(|verb| matches!(*verb, "drain" | "restart" | "uncordon"))
        .collect();
    // Both agents are drained before either restarts.
    assert_eq!(
        agent_steps,
        [
            "drain", "drain", "restart", "restart", "uncordon", "uncordon"
        ],
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_downgrade_or_a_skipped_minor_is_refused_before_any_change() {
    for (version, needle) in [
        ("v1.31.3+k3s1", "cannot be downgraded"),
        ("v1.33.0+k3s1", "skips minor version 1.32"),
    ] {
        let (mut world, connector, _dir) = cluster_at_old_version().await;
        world.profile.cluster.k3s_version = version.to_owned();
        let writes = world.sim.lock().unwrap().writes;
        let error = rolling_upgrade(
            &world.profile,
            &world.nodes,
            &connector,
            &world.opts,
            &options(1),
        )
        .await
        .unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains(needle), "{version}: {message}");
        assert!(message.contains("nothing was changed"), "{message}");
        assert_eq!(connector.events(), Vec::<String>::new());
        assert_eq!(world.sim.lock().unwrap().writes, writes);
    }
}
