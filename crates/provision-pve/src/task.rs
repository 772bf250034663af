//! Waiting for Proxmox tasks (UPIDs): adaptive polling, a bounded wait, and the task log's
//! tail on failure.

use std::time::Duration;

use super::api::PveApi;
use super::error::PveError;
use super::retry::find_lock_timeout;
use super::types::{NodeName, TaskStatus, Upid};
use super::wait::{Check, PollInterval, WaitError, await_condition};

/// How [`wait_for_task`] polls.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitOptions {
    /// Give up (with [`PveError::Timeout`]) after this long.
    pub timeout: Duration,
    /// First poll interval; multiplied by `growth` after each poll up to `max_interval`.
    pub initial_interval: Duration,
    pub max_interval: Duration,
    pub growth: f64,
    /// Multiplies the intervals (and the timeout): below 1 for a time-scaled simulator.
    pub poll_scale: f64,
    /// Lines of the task log kept on failure.
    pub log_lines: u32,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            timeout: Duration::from_secs(15 * 60),
            initial_interval: Duration::from_millis(50),
            max_interval: Duration::from_secs(2),
            growth: 2.0,
            poll_scale: 1.0,
            log_lines: 20,
        }
    }
}

impl WaitOptions {
    /// Options with another timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        WaitOptions {
            timeout,
            ..WaitOptions::default()
        }
    }

    /// The poll intervals, scaled.
    pub fn interval(&self) -> PollInterval {
        PollInterval::growing(
            self.scaled(self.initial_interval),
            self.scaled(self.max_interval),
            self.growth,
        )
    }

    fn scaled(&self, duration: Duration) -> Duration {
        if self.poll_scale.is_finite() && self.poll_scale > 0.0 {
            duration.mul_f64(self.poll_scale)
        } else {
            duration
        }
    }
}

/// Polls `GET /nodes/{node}/tasks/{upid}/status` until the task stops.
///
/// Ok when its exit status is `OK` or `WARNINGS: n` (Proxmox's own test,
/// `PVE::Tools::upid_status_is_error`); [`PveError::TaskFailed`] with the exit status and the
/// last lines of the task log otherwise ([`PveError::LockTimeout`] when the exit status or the
/// log says the task could not take its lock); [`PveError::Timeout`] naming the task when it
/// runs too long. Dropping the future stops the polling (the task itself runs on).
pub async fn wait_for_task(
    api: &dyn PveApi,
    upid: &Upid,
    opts: &WaitOptions,
) -> Result<TaskStatus, PveError> {
    let node = NodeName(
        upid.node()
            .ok_or_else(|| PveError::Decode {
                method: "GET".to_owned(),
                path: format!("/nodes/?/tasks/{upid}/status"),
                message: format!("task id {upid:?} names no node"),
            })?
            .to_owned(),
    );
    wait_for_task_on(api, &node, upid, opts, &|_| {}).await
}

/// [`wait_for_task`] on an explicit node, calling `observe` with every status polled (for
/// progress events).
pub async fn wait_for_task_on(
    api: &dyn PveApi,
    node: &NodeName,
    upid: &Upid,
    opts: &WaitOptions,
    observe: &(dyn Fn(&TaskStatus) + Sync),
) -> Result<TaskStatus, PveError> {
    let what = format!("task {upid}");
    let stopped = await_condition(
        &what,
        opts.scaled(opts.timeout),
        opts.interval(),
        || async {
            let status = api.task_status(node, upid).await?;
            observe(&status);
            Ok(task_finished(status))
        },
    )
    .await;
    match stopped {
        Ok(status) => finished(api, node, upid, status, opts.log_lines).await,
        Err(WaitError::Failed(error)) => Err(error),
        Err(WaitError::TimedOut { timeout, last, .. }) => Err(PveError::Timeout {
            what: describe(upid, &last),
            seconds: timeout.as_secs(),
        }),
    }
}

/// Condition: the task has stopped (whatever its exit status).
pub fn task_finished(status: TaskStatus) -> Check<TaskStatus, TaskStatus> {
    if status.status == "stopped" {
        Check::Met(status)
    } else {
        Check::Pending(status)
    }
}

/// Bytes received and expected so far by a `download-url` task, from the lines pve-common's
/// `download_file_from_url` logs: wget's `Length: N (…)` and its `--progress=dot:giga` rows,
/// each ending with the percentage (`  32768K ........ …  7% 25.0M 12s`). `None` until wget
/// has said how long the file is.
pub fn download_progress(lines: &[String]) -> Option<(u64, u64)> {
    let total: u64 = lines.iter().find_map(|line| {
        line.strip_prefix("Length: ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })?;
    let percent = lines
        .iter()
        .rev()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            let offset = words.next()?.strip_suffix('K')?;
            offset.parse::<u64>().ok()?;
            words.find_map(|word| word.strip_suffix('%')?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        .min(100);
    Some((total.saturating_mul(percent) / 100, total))
}

/// Whether a stopped task's exit status means success.
pub fn exit_status_is_ok(exitstatus: &str) -> bool {
    exitstatus == "OK" || exitstatus.starts_with("WARNINGS")
}

pub(crate) async fn finished(
    api: &dyn PveApi,
    node: &NodeName,
    upid: &Upid,
    status: TaskStatus,
    log_lines: u32,
) -> Result<TaskStatus, PveError> {
    let exitstatus = status.exitstatus.clone().unwrap_or_default();
    if exit_status_is_ok(&exitstatus) {
        return Ok(status);
    }
    let log_tail = match api.task_log(node, upid, log_lines).await {
        Ok(lines) => lines,
        Err(error) => vec![format!("(task log unavailable: {error})")],
    };
    let lock = find_lock_timeout(
        std::iter::once(exitstatus.as_str()).chain(log_tail.iter().map(String::as_str)),
    );
    if let Some((message, file)) = lock {
        return Err(PveError::LockTimeout {
            path: file.unwrap_or(&upid.0).to_owned(),
            message: format!("{} ({})", message.trim(), describe(upid, &status)),
        });
    }
    Err(PveError::TaskFailed {
        upid: upid.0.clone(),
        exitstatus: if exitstatus.is_empty() {
            "(no exit status)".to_owned()
        } else {
            exitstatus
        },
        log_tail,
    })
}

/// `task qmclone 9000 (UPID:…)` for messages.
fn describe(upid: &Upid, status: &TaskStatus) -> String {
    match &status.id {
        Some(id) if !id.is_empty() => format!("task {} {id} ({upid})", status.kind),
        _ => format!("task {} ({upid})", status.kind),
    }
}

#[cfg(test)]
mod tests {
    use super::download_progress;

    #[test]
    fn download_progress_reads_wgets_length_and_last_row() {
        let lines = |rows: &[&str]| rows.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            download_progress(&lines(&["downloading https://x/y.qcow2 to /tmp/y"])),
            None
        );
        let log = lines(&[
            "downloading https://x/y.qcow2 to /tmp/y",
            "Length: 104857600 (100M) [application/octet-stream]",
            "Saving to: '/tmp/y'",
        ]);
        assert_eq!(download_progress(&log), Some((0, 104_857_600)));
        let mut log = log;
        log.push("       0K ........ ........ ........ ........  32% 25.0M 3s".to_owned());
        log.push("   32768K ........ ........ ........ ........  64% 25.0M 1s".to_owned());
        assert_eq!(download_progress(&log), Some((67_108_864, 104_857_600)));
        log.push("calculating checksum...OK, checksum verified".to_owned());
        assert_eq!(download_progress(&log), Some((67_108_864, 104_857_600)));
    }
}
