//! Phase 2's bounded waits: the API VIP answering and k3s nodes Ready (and etcd members), each
//! a named condition polled by [`await_condition`].

use std::net::IpAddr;

use anyhow::bail;

use super::{Phase2Options, get_nodes};
use crate::k3s::cluster::{ClusterNode, api_ready_command, parse_api_ready};
use crate::pve::wait::{Check, PollInterval, WaitError, await_condition};
use crate::ssh::RemoteExec;

/// Poll [`api_ready_command`] on the bootstrap server until the API answers at `vip` (kube-vip, deployed
/// from the bootstrap server's manifests, holds it once the server runs), bounded by `ready_timeout`.
pub(super) async fn wait_for_api(
    bootstrap: &dyn RemoteExec,
    vip: IpAddr,
    opts: &Phase2Options,
) -> anyhow::Result<()> {
    let command = api_ready_command(vip);
    let what = format!("the API VIP {vip} to answer");
    let waited = await_condition(
        &what,
        opts.ready_timeout,
        PollInterval::fixed(opts.poll_interval),
        || async {
            Ok::<_, std::convert::Infallible>(match bootstrap.run(&command, None).await {
                Ok(output) => api_answers(output.exit_status, &output.stdout, &output.stderr),
                Err(error) => Check::Pending(format!("{error:#}")),
            })
        },
    )
    .await;
    match waited {
        Ok(()) => Ok(()),
        Err(WaitError::Failed(never)) => match never {},
        Err(WaitError::TimedOut { last, .. }) => bail!(
            "timed out after {}s waiting for the API VIP {vip} to answer (asked {}; last: {last}); \
             kube-vip serves it from {}: check `k3s kubectl -n kube-system get pods -l app.kubernetes.io/name=kube-vip-ds` there",
            opts.ready_timeout.as_secs(),
            bootstrap.host(),
            bootstrap.host()
        ),
    }
}

/// Condition: [`api_ready_command`] says the API answers; pending with its exit status and
/// stderr (or stdout when stderr is empty).
fn api_answers(exit_status: u32, stdout: &[u8], stderr: &[u8]) -> Check<(), String> {
    let stdout = String::from_utf8_lossy(stdout);
    if parse_api_ready(exit_status, &stdout) {
        return Check::Met(());
    }
    let stderr = String::from_utf8_lossy(stderr);
    Check::Pending(format!(
        "exit {exit_status}: {}",
        if stderr.trim().is_empty() {
            stdout.trim()
        } else {
            stderr.trim()
        }
    ))
}

/// Poll the node list on the bootstrap server until every node in `names` is Ready (and, for servers,
/// an etcd member), bounded by `ready_timeout`; the error names the node and the missing condition.
pub(super) async fn wait_until(
    bootstrap: &dyn RemoteExec,
    names: &[&str],
    etcd_member: bool,
    opts: &Phase2Options,
) -> anyhow::Result<()> {
    let condition = if etcd_member {
        "Ready and an etcd member"
    } else {
        "Ready"
    };
    let what = format!("{} to be {condition}", names.join(", "));
    let waited = await_condition(
        &what,
        opts.ready_timeout,
        PollInterval::fixed(opts.poll_interval),
        || async {
            Ok::<_, std::convert::Infallible>(match get_nodes(bootstrap).await {
                Ok(cluster) => nodes_ready(&cluster, names, etcd_member),
                Err(error) => Check::Pending((
                    names.iter().map(|name| (*name).to_owned()).collect(),
                    format!("API not answering: {error:#}"),
                )),
            })
        },
    )
    .await;
    match waited {
        Ok(()) => Ok(()),
        Err(WaitError::Failed(never)) => match never {},
        Err(WaitError::TimedOut {
            last: (missing, last_seen),
            ..
        }) => bail!(
            "timed out after {}s waiting for {} to be {condition} (asked {}; last seen: {last_seen})",
            opts.ready_timeout.as_secs(),
            missing.join(", "),
            bootstrap.host()
        ),
    }
}

/// Condition: every node in `names` is registered and Ready (and an etcd member when
/// `etcd_member`); pending with the nodes still missing and what was seen of them.
fn nodes_ready(
    cluster: &[ClusterNode],
    names: &[&str],
    etcd_member: bool,
) -> Check<(), (Vec<String>, String)> {
    let mut missing = Vec::new();
    let mut seen = Vec::new();
    for name in names {
        match cluster.iter().find(|n| n.name == *name) {
            Some(n) if n.ready && (!etcd_member || n.etcd_member) => {}
            Some(n) => {
                missing.push((*name).to_owned());
                seen.push(format!(
                    "{name}: {}{}",
                    if n.ready { "Ready" } else { "NotReady" },
                    if etcd_member && !n.etcd_member {
                        ", not an etcd member"
                    } else {
                        ""
                    }
                ));
            }
            None => {
                missing.push((*name).to_owned());
                seen.push(format!("{name}: not registered"));
            }
        }
    }
    if missing.is_empty() {
        Check::Met(())
    } else {
        Check::Pending((missing, seen.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(name: &str, ready: bool, etcd_member: bool) -> ClusterNode {
        ClusterNode {
            name: name.to_owned(),
            ready,
            etcd_member,
            labels: BTreeMap::new(),
            taints: Vec::new(),
        }
    }

    #[test]
    fn nodes_ready_names_what_is_missing() {
        let cluster = [
            node("s1", true, true),
            node("s2", true, false),
            node("a1", false, false),
        ];
        assert_eq!(nodes_ready(&cluster, &["s1"], true), Check::Met(()));
        assert_eq!(nodes_ready(&cluster, &["s2"], false), Check::Met(()));
        assert_eq!(
            nodes_ready(&cluster, &["s1", "s2", "a1", "a2"], true),
            Check::Pending((
                vec!["s2".to_owned(), "a1".to_owned(), "a2".to_owned()],
                "s2: Ready, not an etcd member; a1: NotReady, not an etcd member; a2: not registered"
                    .to_owned()
            ))
        );
    }

    #[test]
    fn api_answers_reports_stderr_or_stdout() {
        assert_eq!(
            api_answers(7, b"", b"curl: (7) Failed to connect\n"),
            Check::Pending("exit 7: curl: (7) Failed to connect".to_owned())
        );
        assert_eq!(
            api_answers(1, b"nope\n", b" "),
            Check::Pending("exit 1: nope".to_owned())
        );
    }
}
