//! The etcd and k3s day-2 steps over SSH, built from [`crate::k3s::etcd`]: read the members
//! and their health, refuse when etcd would not stay healthy without a node, save and verify a
//! snapshot, remove a node's member (k3s's annotation, then `etcdctl member remove` when the
//! Node is gone), delete the Node and its node-password Secret, stop k3s.
//!
//! Every step observes first, so running it again after it succeeded (or after a crash half
//! way) changes nothing more: a removed member is not looked for twice, a listed snapshot is not
//! taken again, a missing Node is no error.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::error::UserError;
use crate::k3s::drain::NodeName;
use crate::k3s::etcd::{
    EtcdMember, SNAPSHOT_LS_COMMAND, Snapshot, SnapshotName, annotate_remove_command,
    delete_node_command, delete_node_password_command, endpoint_health_command, find_snapshot,
    get_node_command, healthy_without, member_list_command, member_remove_command, member_removed,
    members_of, parse_endpoint_health, parse_member_list, parse_snapshot_list,
    snapshot_save_command, stop_k3s_command,
};
use crate::pve::wait::{Check, PollInterval, WaitError, await_condition};
use crate::ssh::RemoteExec;

/// Run `command` on `exec`; its stdout, or an error naming the host, the command and stderr.
async fn run_ok(exec: &dyn RemoteExec, command: &str) -> anyhow::Result<String> {
    let output = exec
        .run(command, None)
        .await
        .with_context(|| format!("running `{command}` on {}", exec.host()))?;
    if output.exit_status != 0 {
        bail!(
            "{}: `{command}` failed with exit status {}: {}",
            exec.host(),
            output.exit_status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The etcd members as the server behind `exec` sees them.
pub async fn member_list(exec: &dyn RemoteExec) -> anyhow::Result<Vec<EtcdMember>> {
    let stdout = run_ok(exec, &member_list_command()).await?;
    Ok(parse_member_list(&stdout)?)
}

/// The client URLs of the members that answer healthy (an unhealthy one makes etcdctl exit
/// non-zero; its answer on stdout still counts).
pub async fn healthy_endpoints(exec: &dyn RemoteExec) -> anyhow::Result<BTreeSet<String>> {
    let command = endpoint_health_command();
    let output = exec
        .run(&command, None)
        .await
        .with_context(|| format!("running `{command}` on {}", exec.host()))?;
    Ok(parse_endpoint_health(&String::from_utf8_lossy(
        &output.stdout,
    ))?)
}

/// Refuse (a user error saying why and what to do) unless etcd stays healthy without `node`'s
/// member; returns the members seen.
pub async fn check_healthy_without(
    exec: &dyn RemoteExec,
    node: &NodeName,
) -> anyhow::Result<Vec<EtcdMember>> {
    let members = member_list(exec).await?;
    let healthy = healthy_endpoints(exec).await?;
    if let Err(refusal) = healthy_without(&members, &healthy, node.as_str()) {
        return Err(UserError::new(
            format!("refusing to take server {node} out of etcd; nothing was changed: {refusal}"),
            Some("`provision status` shows the servers and their etcd membership"),
        )
        .into());
    }
    Ok(members)
}

/// Save an etcd snapshot named `name` on the server behind `exec` and check that
/// `k3s etcd-snapshot ls` lists it non-empty. A snapshot of that name already listed (a re-run
/// after a crash) is returned as it is.
pub async fn save_snapshot(exec: &dyn RemoteExec, name: &SnapshotName) -> anyhow::Result<Snapshot> {
    let listed = parse_snapshot_list(&run_ok(exec, SNAPSHOT_LS_COMMAND).await?);
    if let Some(snapshot) = find_snapshot(&listed, name) {
        return Ok(snapshot.clone());
    }
    run_ok(exec, &snapshot_save_command(name))
        .await
        .context("saving an etcd snapshot")?;
    let listed = parse_snapshot_list(&run_ok(exec, SNAPSHOT_LS_COMMAND).await?);
    match find_snapshot(&listed, name) {
        Some(snapshot) => Ok(snapshot.clone()),
        None => bail!(
            "{}: `k3s etcd-snapshot save --name {}` succeeded but `{SNAPSHOT_LS_COMMAND}` lists no \
             non-empty snapshot of that name; not going on without a backup",
            exec.host(),
            name.as_str()
        ),
    }
}

/// Remove `node`'s etcd member through the server behind `exec` (never `node` itself): with
/// its Node still registered, by k3s's `etcd.k3s.cattle.io/remove` annotation, waiting for
/// `removed-node-name`; with the Node gone, by `etcdctl member remove`. Nothing to do when
/// no member of `node` is left.
pub async fn remove_member(
    exec: &dyn RemoteExec,
    node: &NodeName,
    timeout: Duration,
    poll: Duration,
) -> anyhow::Result<()> {
    let members = member_list(exec).await?;
    let own: Vec<u64> = members_of(&members, node.as_str())
        .iter()
        .map(|member| member.id)
        .collect();
    if own.is_empty() {
        return Ok(());
    }
    let node_registered = exec
        .run(&get_node_command(node), None)
        .await
        .is_ok_and(|output| output.exit_status == 0);
    if !node_registered {
        for id in own {
            run_ok(exec, &member_remove_command(id))
                .await
                .with_context(|| format!("removing the etcd member {id:x} of {node}"))?;
        }
        return Ok(());
    }
    run_ok(exec, &annotate_remove_command(node)).await?;
    let waited = await_condition(
        &format!("etcd member of {node} to be removed"),
        timeout,
        PollInterval::fixed(poll),
        || removal_done(exec, node),
    )
    .await;
    match waited {
        Ok(()) => Ok(()),
        Err(WaitError::Failed(never)) => match never {},
        Err(WaitError::TimedOut { last, .. }) => bail!(
            "timed out after {}s waiting for k3s to remove the etcd member of {node} (last: {last}); \
             check the managed etcd controller's log (`journalctl -u k3s`) on {}",
            timeout.as_secs(),
            exec.host()
        ),
    }
}

/// Condition: the Node carries `removed-node-name`, or no member of `node` is listed.
async fn removal_done(
    exec: &dyn RemoteExec,
    node: &NodeName,
) -> Result<Check<(), String>, std::convert::Infallible> {
    if let Ok(json) = run_ok(exec, &get_node_command(node)).await
        && member_removed(&json, node.as_str()).unwrap_or(false)
    {
        return Ok(Check::Met(()));
    }
    Ok(match member_list(exec).await {
        Ok(members) if members_of(&members, node.as_str()).is_empty() => Check::Met(()),
        Ok(_) => Check::Pending("the member is still listed".to_owned()),
        Err(error) => Check::Pending(format!("{error:#}")),
    })
}

/// Delete `node`'s Node object and its `kube-system/<node>.node-password.k3s` Secret (both may
/// already be gone).
pub async fn delete_node(exec: &dyn RemoteExec, node: &NodeName) -> anyhow::Result<()> {
    run_ok(exec, &delete_node_command(node)).await?;
    run_ok(exec, &delete_node_password_command(node)).await?;
    Ok(())
}

/// Stop k3s (`unit`) on the node behind `exec` and keep it from starting again.
pub async fn stop_k3s(exec: &dyn RemoteExec, unit: &str) -> anyhow::Result<()> {
    run_ok(exec, &stop_k3s_command(unit)).await?;
    Ok(())
}
