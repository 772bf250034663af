//! Batched task waiting against the simulator: N concurrent tasks of one node cost one list
//! request per poll (counted in the simulator's request log), exit statuses included, never a
//! status request per task, and a failed task still reports its own exit status and log tail.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use provision::pve::{
    Auth, ClientConfig, NodeName, NodeTaskPoller, Params, PollOptions, PveApi, PveClient, PveError,
    Secret, TlsMode,
};
use pve_sim::{Inventory, SimConfig, SimHandle, SimMode, Simulator};

const TASKS: u32 = 6;

/// A simulator whose tasks end when the test says, and a client of it with the fixture's token.
async fn explicit_sim() -> (SimHandle, Arc<dyn PveApi>) {
    let mut config = SimConfig::new(Inventory::builtin("pve-a100").unwrap());
    config.mode = SimMode::Explicit;
    let sim = Simulator::start(config).await.unwrap();
    let client: Arc<dyn PveApi> = Arc::new(
        PveClient::new(ClientConfig::new(
            sim.base_url(),
            Auth::ApiToken {
                user_realm_tokenid: "provision@pve!ci".to_owned(),
                secret: Secret::new("5f1c3a6e-8d2b-4c71-9e0a-2b7d4f6a9c13"),
            },
            TlsMode::Fingerprint(sim.fingerprint()),
        ))
        .unwrap(),
    );
    (sim, client)
}

#[tokio::test]
async fn concurrent_waits_on_one_node_share_one_list_request_per_poll() {
    let (sim, client) = explicit_sim().await;
    let node = NodeName("pve1".to_owned());
    let mut upids = Vec::new();
    for vmid in 0..TASKS {
        let params: Params = [
            ("vmid", (300 + vmid).to_string()),
            ("memory", "512".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        upids.push(client.vm_create(&node, &params).await.unwrap());
    }
    let options = PollOptions {
        initial_interval: Duration::from_millis(5),
        max_interval: Duration::from_millis(10),
        ..PollOptions::default()
    };
    let poller = NodeTaskPoller::spawn(Arc::clone(&client), node.clone(), options);
    let waits: Vec<_> = upids
        .iter()
        .map(|upid| {
            let (poller, client, upid) = (poller.clone(), Arc::clone(&client), upid.clone());
            tokio::spawn(async move {
                poller
                    .wait(client.as_ref(), &upid, Duration::from_secs(20), 20)
                    .await
            })
        })
        .collect();
    // Let the poller look a few times while every task runs, then end them: one fails.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stepper = sim.stepper();
    let (failing, succeeding) = upids.split_last().unwrap();
    for upid in succeeding {
        stepper.finish_ok(&upid.0).unwrap();
    }
    stepper
        .fail(&failing.0, "unable to create VM: boom")
        .unwrap();
    let mut results = Vec::new();
    for wait in waits {
        results.push(wait.await.unwrap());
    }
    for result in &results[..results.len() - 1] {
        assert_eq!(result.as_ref().unwrap().exitstatus.as_deref(), Some("OK"));
    }
    match results.last().unwrap() {
        Err(PveError::TaskFailed {
            upid, exitstatus, ..
        }) => {
            assert_eq!(upid, &failing.0);
            assert_eq!(exitstatus, "unable to create VM: boom");
        }
        other => panic!("unexpected {other:?}"),
    }

    let log = sim.request_log();
    let lists: Vec<_> = log
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/nodes/pve1/tasks")
        .collect();
    let all = lists
        .iter()
        .filter(|r| r.params.get("source").and_then(|s| s.as_str()) == Some("all"))
        .count();
    let statuses = log
        .iter()
        .filter(|r| r.path.ends_with("/status") && r.path.contains("/tasks/"))
        .count();
    // Every poll is one list request (running and archived tasks) for all six tasks, which
    // also carries the exit statuses; no task was asked about on its own.
    assert!(all >= 3, "{all} polls");
    assert_eq!(all, lists.len(), "{} list requests", lists.len());
    assert_eq!(statuses, 0);
    let per_task_equivalent = all * TASKS as usize;
    assert!(
        lists.len() * 2 < per_task_equivalent,
        "{} list requests",
        lists.len()
    );
    sim.shutdown().await;
}

/// The poller times a task from its start as the UPID's `pstart` tells it, not from when it was
/// asked about: an upload whose waiter came late still shows how long the node's uploads take
/// (the node's speed comes from it). Another upload's prompt waiter ties `pstart` to the
/// poller's clock.
#[tokio::test]
async fn a_late_waiter_times_its_task_from_the_upids_pstart() {
    use sha2::Digest as _;
    let (sim, client) = explicit_sim().await;
    let node = NodeName("pve1".to_owned());
    let upload = |name: &'static str| {
        let client = Arc::clone(&client);
        let node = node.clone();
        async move {
            let payload = format!("CD001 {name}").into_bytes();
            let sha256 = hex::encode(sha2::Sha256::digest(&payload));
            client
                .upload(
                    &node,
                    "local",
                    provision::pve::types::UploadContent::Iso,
                    name,
                    payload,
                    &sha256,
                )
                .await
                .unwrap()
        }
    };
    let options = PollOptions {
        initial_interval: Duration::from_millis(5),
        max_interval: Duration::from_millis(20),
        ..PollOptions::default()
    };
    let poller = NodeTaskPoller::spawn(Arc::clone(&client), node.clone(), options);
    let wait = |upid: &provision::pve::Upid| {
        let (poller, client, upid) = (poller.clone(), Arc::clone(&client), upid.clone());
        tokio::spawn(async move {
            poller
                .wait(client.as_ref(), &upid, Duration::from_secs(20), 20)
                .await
        })
    };
    let stepper = sim.stepper();

    // A prompt waiter: the poller learns which instant a `pstart` is.
    let prompt = upload("prompt.iso").await;
    let prompt_waiting = wait(&prompt);
    // The late one: asked about 600 ms after it started, ended 50 ms after that, before the
    // prompt one.
    let late = upload("late.iso").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let late_waiting = wait(&late);
    tokio::time::sleep(Duration::from_millis(50)).await;
    stepper.finish_ok(&late.0).unwrap();
    late_waiting.await.unwrap().unwrap();
    // It ran at least 650 ms, an upload is typically 0.5 s: the node shows at least 1.3 ×
    // typical. Timed from when it was asked about, it would say about a tenth of that.
    let expected = poller
        .expected(Duration::from_secs(1))
        .expect("the upload showed the node's speed");
    assert!(expected >= Duration::from_millis(1_250), "{expected:?}");
    stepper.finish_ok(&prompt.0).unwrap();
    prompt_waiting.await.unwrap().unwrap();
    sim.shutdown().await;
}
