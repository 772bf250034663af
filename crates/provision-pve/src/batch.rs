//! Waiting on many tasks of one node with one request per poll: a [`NodeTaskPoller`] is a small
//! actor per node that batches the UPIDs it is asked about and polls
//! `GET /nodes/{node}/tasks?source=all&since=…` for all of them: the running tasks, then the
//! archive back to the oldest task waited for, each ended task with its exit status
//! (pve-manager archives a task when its worker is reaped). A task the list does not show is
//! asked for by its own status. When the list is not allowed (HTTP 403) the poller falls back
//! to one status request per task, for good.
//!
//! Intervals adapt to the expected duration: the poller learns how long each task type took on
//! this node (and, from the types seen, how fast the node is against typical durations) and
//! first looks at a task shortly before it should end; after that (and before anything ended)
//! the interval is a small part of the time the task has run, within `initial_interval` and
//! `max_interval`. Tasks that move bytes through a storage (a download, a create with an
//! import) share its bandwidth, so one expects to take longer for each task of its type running
//! beside it; a task not looked at yet is re-planned when the node's speed becomes known or
//! another joins it. A task is timed from its start as its UPID's `pstart` says, not from when
//! its waiter came. The next poll is the earliest any waiting task wants one, so N concurrent
//! tasks cost one request per poll, not N.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::api::PveApi;
use super::error::PveError;
use super::types::{NodeName, TaskListEntry, TaskListQuery, TaskStatus, Upid};

/// How a [`NodeTaskPoller`] polls.
#[derive(Debug, Clone, PartialEq)]
pub struct PollOptions {
    /// First interval for a task of a type not seen yet, and the shortest between polls.
    pub initial_interval: Duration,
    pub max_interval: Duration,
    /// Entries asked for per list request.
    pub list_limit: u32,
    /// The fastest a node may do its tasks, as a part of their typical durations
    /// ([`typical_seconds`]): before the node showed its speed, a task is first looked at
    /// after its typical duration times this (0: at `initial_interval`).
    pub fastest: f64,
}

impl Default for PollOptions {
    fn default() -> Self {
        PollOptions {
            initial_interval: Duration::from_millis(50),
            max_interval: Duration::from_secs(2),
            list_limit: 1000,
            fastest: 0.0,
        }
    }
}

/// Part of the expected duration to wait before the first look: a task sharing its storage
/// with fewer others than the one learned from ends sooner, so the first look comes early.
const FIRST_LOOK: f64 = 0.6;

/// The same for a download: its length is the image's size over a mirror's speed, which vary
/// tenfold between sites, so its typical duration says little.
const FIRST_LOOK_DOWNLOAD: f64 = 0.3;

/// The same for a task of fixed length ([`fixed_length`]), expected as long as the shortest
/// one of its type seen here: that one's time ran from its start to the look that saw it
/// stopped, so it is a little over the task's length and one look at it mostly suffices.
const FIRST_LOOK_FIXED: f64 = 1.0;

/// After a look that found a task running, the next one comes after this part of the time it
/// has run: the overshoot stays below it, and a task of any length costs a few dozen looks.
const OVERSHOOT: f64 = 0.08;

/// The same for a task whose length depends on the bytes it moves and the tasks it shares its
/// storage with (a download, create, clone): long, looked at from before its expected end, and
/// where an overshoot delays only the steps after it, not the storage the others keep busy.
const OVERSHOOT_LONG: f64 = 0.12;

/// The same for a task of fixed length before the node showed its speed: it may take 1/20 of
/// its typical duration or all of it, so looks spread wider until one ends.
const OVERSHOOT_UNKNOWN: f64 = 0.25;

/// How much longer a task that moves bytes takes for each task of its type beside it, as a part
/// of its duration alone: its bytes share the storage's bandwidth, its own work (process start,
/// config, the wire of a download) does not.
const SHARED_PART: f64 = 0.6;

/// The expected duration of a byte-moving task among `sharers` of its type (itself included),
/// in units of its duration alone.
fn sharing_factor(sharers: u32) -> f64 {
    1.0 + SHARED_PART * f64::from(sharers.saturating_sub(1))
}

/// A task type's duration on an idle node with local SSD storage, in seconds (the simulator's
/// figures, crates/pve-sim/README.md "Storage model"): only the ratio between types matters,
/// the poller learns the node's speed from the tasks that end.
pub fn typical_seconds(kind: &str) -> f64 {
    match kind {
        "download" => 20.0,
        "imgcopy" => 0.5,
        "imgdel" => 1.0,
        "qmcreate" => 8.0,
        // A linked clone (provision's usual one); a full clone is looked at early, which costs
        // looks but no time.
        "qmclone" => 3.0,
        "qmresize" | "qmconfig" => 1.0,
        "qmstart" => 4.0,
        "qmstop" => 2.0,
        "qmshutdown" => 5.0,
        "qmdestroy" => 3.0,
        _ => 2.0,
    }
}

/// The handle of one node's poller; cloning it shares the actor. The actor stops when the last
/// handle is dropped.
#[derive(Clone)]
pub struct NodeTaskPoller {
    sender: mpsc::UnboundedSender<Waiter>,
    /// The node's speed ([`Actor::speed`]) as `f64` bits; 0 while unknown.
    speed: Arc<AtomicU64>,
}

struct Waiter {
    upid: Upid,
    reply: oneshot::Sender<Result<TaskStatus, PveError>>,
}

impl NodeTaskPoller {
    /// Starts the actor for `node` on the current tokio runtime.
    pub fn spawn(api: Arc<dyn PveApi>, node: NodeName, options: PollOptions) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let speed = Arc::new(AtomicU64::new(0));
        let actor = Actor {
            api,
            node,
            options,
            pending: BTreeMap::new(),
            learned: BTreeMap::new(),
            speed: None,
            speed_bounds: (0.0, f64::INFINITY),
            shared_speed: Arc::clone(&speed),
            list_allowed: true,
            pstart_clock: PstartClock::new(Instant::now()),
        };
        tokio::spawn(actor.run(receiver));
        NodeTaskPoller { sender, speed }
    }

    /// How long something that typically takes `typical` (on an idle node, see
    /// [`typical_seconds`]) should take on this node, from the speed its fixed-length tasks
    /// showed; `None` before one ended.
    pub fn expected(&self, typical: Duration) -> Option<Duration> {
        let speed = f64::from_bits(self.speed.load(Ordering::Relaxed));
        (speed > 0.0).then(|| typical.mul_f64(speed))
    }

    /// Waits until `upid` stops; `Ok` only for exit status `OK` (or `WARNINGS`), else the
    /// same errors as [`super::task::wait_for_task_on`] (exit status, log tail, lock timeout).
    pub async fn wait(
        &self,
        api: &dyn PveApi,
        upid: &Upid,
        timeout: Duration,
        log_lines: u32,
    ) -> Result<TaskStatus, PveError> {
        let node = NodeName(upid.node().unwrap_or_default().to_owned());
        let status = self.stopped(upid, timeout).await?;
        super::task::finished(api, &node, upid, status, log_lines).await
    }

    /// Waits until `upid` stops (whatever its exit status), at most `timeout`.
    pub async fn stopped(&self, upid: &Upid, timeout: Duration) -> Result<TaskStatus, PveError> {
        let (reply, answer) = oneshot::channel();
        let gone = || PveError::Config {
            message: format!("the task poller stopped while waiting for {upid}"),
            hint: None,
        };
        self.sender
            .send(Waiter {
                upid: upid.clone(),
                reply,
            })
            .map_err(|_| gone())?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(PveError::Timeout {
                what: format!("task {upid}"),
                seconds: timeout.as_secs(),
            }),
        }
    }
}

/// A task waited for.
struct Pending {
    kind: String,
    /// When it was first asked about, and when it started as far as its UPID's `pstart` tells
    /// ([`Actor::started`]).
    added: Instant,
    pstart: Option<u64>,
    next_look: Instant,
    /// It had a look of its own (its `next_look` came): from then on its looks follow how
    /// long it has run, not expectations.
    looked: bool,
    /// Tasks of its type on the node when it was last planned, itself included (byte-moving
    /// types; 1 for the others).
    sharers: u32,
    /// When a list request that showed it running was sent: it ended after that.
    running_at: Option<Instant>,
    replies: Vec<oneshot::Sender<Result<TaskStatus, PveError>>>,
}

struct Actor {
    api: Arc<dyn PveApi>,
    node: NodeName,
    options: PollOptions,
    pending: BTreeMap<String, Pending>,
    /// How long a task of each type took (from its start to seen stopped), alone: a
    /// byte-moving one's time over its [`sharing_factor`].
    learned: BTreeMap<String, Duration>,
    /// Observed over typical durations ([`typical_seconds`]), from the tasks that ended here
    /// whose length does not depend on bytes or load (start, resize, delete, upload of a
    /// seed): the middle of `speed_bounds` while the tasks agree, else the lowest upper bound.
    speed: Option<f64>,
    /// Each such task's length lies between the last look that saw it running and the look
    /// that saw it stopped, both timed from its start ([`Actor::started`]: an upload's waiter
    /// may come long after its task started, when the answer waited for a busy runtime), and
    /// so the node's speed between these bounds: the highest lower and the lowest upper bound.
    speed_bounds: (f64, f64),
    shared_speed: Arc<AtomicU64>,
    list_allowed: bool,
    /// The node's `pstart` on this run's clock.
    pstart_clock: PstartClock,
}

/// How much earlier than it says a task may have started: `pstart` counts whole ticks.
const PSTART_SLACK: Duration = Duration::from_millis(10);

/// A UPID's `pstart` in seconds since the node's boot: the worker's start time in clock ticks
/// (`/proc/PID/stat`, `USER_HZ` = 100, so 10 ms each).
fn pstart_seconds(ticks: u64) -> f64 {
    ticks as f64 / 100.0
}

/// A node's `pstart` on this process's clock. The node's boot, in seconds from `origin`, is the
/// earliest that every task asked about allows (a task is asked about after it started), so a
/// task's start is known to `pstart`'s 10 ms even when its waiter came late. Seconds as `f64`
/// from an origin of this run: the node may have booted long before this process's clock can
/// reach back (a host up for a year, a CI runner up for minutes).
#[derive(Debug, Clone, Copy)]
struct PstartClock {
    origin: Instant,
    boot: Option<f64>,
}

impl PstartClock {
    fn new(origin: Instant) -> Self {
        PstartClock { origin, boot: None }
    }

    /// A task with `pstart` `ticks` was asked about at `added`.
    fn saw(&mut self, added: Instant, ticks: u64) {
        let boot = self.seconds(added) - pstart_seconds(ticks);
        self.boot = Some(self.boot.map_or(boot, |known| known.min(boot)));
    }

    /// When a task with `pstart` `ticks` that was asked about at `added` started: never after
    /// `added`.
    fn started(&self, added: Instant, ticks: Option<u64>) -> Instant {
        let (Some(boot), Some(ticks)) = (self.boot, ticks) else {
            return added;
        };
        let before = self.seconds(added) - (boot + pstart_seconds(ticks));
        Duration::try_from_secs_f64(before.max(0.0))
            .ok()
            .and_then(|before| added.checked_sub(before))
            .unwrap_or(added)
    }

    fn seconds(&self, at: Instant) -> f64 {
        if at >= self.origin {
            at.duration_since(self.origin).as_secs_f64()
        } else {
            -self.origin.duration_since(at).as_secs_f64()
        }
    }
}

impl Actor {
    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Waiter>) {
        loop {
            let next = self.pending.values().map(|p| p.next_look).min();
            let waiter = match next {
                None => receiver.recv().await,
                Some(at) => tokio::select! {
                    waiter = receiver.recv() => waiter,
                    () = tokio::time::sleep_until(at) => {
                        self.poll().await;
                        continue;
                    }
                },
            };
            match waiter {
                Some(waiter) => self.add(waiter),
                None => return,
            }
        }
    }

    fn add(&mut self, waiter: Waiter) {
        let now = Instant::now();
        let kind = kind_of(&waiter.upid).to_owned();
        if let Some(pending) = self.pending.get_mut(&waiter.upid.0) {
            pending.replies.push(waiter.reply);
            return;
        }
        let sharers = if !shares_bandwidth(&kind) {
            1
        } else {
            let beside = self.pending.values().filter(|p| p.kind == kind).count();
            u32::try_from(beside).unwrap_or(u32::MAX).saturating_add(1)
        };
        let pstart = pstart_of(&waiter.upid.0);
        if let Some(ticks) = pstart {
            self.pstart_clock.saw(now, ticks);
        }
        let first = self.first_look(&kind, sharers);
        let started = self.started_at(now, pstart);
        self.pending.insert(
            waiter.upid.0,
            Pending {
                kind: kind.clone(),
                added: now,
                pstart,
                next_look: (started + first).max(now),
                looked: false,
                sharers,
                running_at: None,
                replies: vec![waiter.reply],
            },
        );
        if sharers > 1 {
            // The others of its type now share their storage with one more.
            for pending in self.pending.values_mut().filter(|p| p.kind == kind) {
                pending.sharers = sharers;
            }
            self.replan();
        }
    }

    /// When `pending` started: from its `pstart` on this run's clock, never after it was asked
    /// about.
    fn started(&self, pending: &Pending) -> Instant {
        self.started_at(pending.added, pending.pstart)
    }

    fn started_at(&self, added: Instant, pstart: Option<u64>) -> Instant {
        self.pstart_clock.started(added, pstart)
    }

    /// After this long a task of `kind` among `sharers` of its type gets its first look.
    fn first_look(&self, kind: &str, sharers: u32) -> Duration {
        let initial = self.options.initial_interval;
        let share = sharing_factor(sharers);
        match self.expected(kind) {
            Some(expected) if fixed_length(kind) => expected.mul_f64(FIRST_LOOK_FIXED),
            Some(expected) if kind == "download" => expected.mul_f64(FIRST_LOOK_DOWNLOAD * share),
            Some(expected) => expected.mul_f64(FIRST_LOOK * share),
            None => {
                Duration::try_from_secs_f64(typical_seconds(kind) * self.options.fastest * share)
                    .unwrap_or(initial)
            }
        }
        .max(initial)
    }

    /// Moves the first look of each task that has not had one to what is expected of it now
    /// (the node's speed became known, or more tasks share its storage); never earlier.
    fn replan(&mut self) {
        let planned: Vec<(String, Instant)> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.looked)
            .map(|(upid, p)| {
                (
                    upid.clone(),
                    self.started(p) + self.first_look(&p.kind, p.sharers),
                )
            })
            .collect();
        for (upid, at) in planned {
            if let Some(pending) = self.pending.get_mut(&upid) {
                pending.next_look = pending.next_look.max(at);
            }
        }
    }

    /// How long a task of `kind` should take here: as long as the last one took (of a fixed
    /// length: the shortest), else its typical duration at the speed the node has shown so
    /// far; `None` before anything ended.
    fn expected(&self, kind: &str) -> Option<Duration> {
        if let Some(took) = self.learned.get(kind) {
            return Some(*took);
        }
        let speed = self.speed?;
        Some(Duration::from_secs_f64(typical_seconds(kind) * speed))
    }

    /// The interval after a look that found `pending` still running: a fraction of how long
    /// it has run (so the overshoot stays a small part of its duration) within the bounds.
    fn next_interval(&self, pending: &Pending, now: Instant) -> Duration {
        let ran = now.duration_since(self.started(pending));
        let part = if !fixed_length(&pending.kind) {
            OVERSHOOT_LONG
        } else if self.speed.is_none() {
            OVERSHOOT_UNKNOWN
        } else {
            OVERSHOOT
        };
        self.bounded(ran.mul_f64(part))
    }

    /// `interval` within `initial_interval` and `max_interval`.
    fn bounded(&self, interval: Duration) -> Duration {
        interval
            .max(self.options.initial_interval)
            .min(self.options.max_interval.max(self.options.initial_interval))
    }

    /// One poll: the active list (or each task's status), then the exit statuses of the tasks
    /// that left it.
    async fn poll(&mut self) {
        let asked = Instant::now();
        let outcome = if self.list_allowed {
            self.poll_list().await
        } else {
            self.poll_each().await
        };
        let now = Instant::now();
        match outcome {
            Ok(stopped) => {
                for status in stopped {
                    self.resolve(&status.upid.clone(), Ok(status), now);
                }
                // The list showed every task still waited for running when it was asked for.
                if self.list_allowed {
                    for pending in self.pending.values_mut() {
                        pending.running_at = Some(asked);
                    }
                }
            }
            Err(error) => {
                // Each waiter sees the error as its own status request would have.
                let upids: Vec<String> = self.pending.keys().cloned().collect();
                for upid in upids {
                    self.resolve(&upid, Err(error.clone()), now);
                }
            }
        }
        // The list showed every pending task: one that wanted a look within half its next
        // interval counts as looked at now, so the looks of many tasks fall on the same polls.
        let due: Vec<(String, Duration)> = self
            .pending
            .iter()
            .filter_map(|(upid, p)| {
                let interval = self.next_interval(p, now);
                (p.next_look <= now + interval / 2).then(|| (upid.clone(), interval))
            })
            .collect();
        for (upid, interval) in due {
            if let Some(pending) = self.pending.get_mut(&upid) {
                pending.next_look = now + interval;
                pending.looked = true;
            }
        }
    }

    fn resolve(&mut self, upid: &str, result: Result<TaskStatus, PveError>, now: Instant) {
        let Some(pending) = self.pending.remove(upid) else {
            return;
        };
        if result.is_ok() {
            let started = self.started(&pending);
            let took = now.duration_since(started);
            let mut replan = false;
            if fixed_length(&pending.kind) {
                // It ended after the last list that showed it running (less `pstart`'s tick).
                let running = pending
                    .running_at
                    .map_or(Duration::ZERO, |at| at.saturating_duration_since(started))
                    .saturating_sub(PSTART_SLACK);
                let typical = typical_seconds(&pending.kind);
                let (low, high) = self.speed_bounds;
                let low = low.max(running.as_secs_f64() / typical);
                let high = high.min(took.as_secs_f64() / typical);
                self.speed_bounds = (low, high);
                let speed = if low <= high {
                    f64::midpoint(low, high)
                } else {
                    high
                };
                tracing::debug!(
                    node = %self.node, kind = %pending.kind, ?took, low, high, speed,
                    "task poller: node speed"
                );
                replan = self.speed.is_none();
                self.speed = Some(speed);
                self.shared_speed.store(speed.to_bits(), Ordering::Relaxed);
            }
            let learned = match self.learned.get(&pending.kind) {
                Some(shortest) if fixed_length(&pending.kind) => took.min(*shortest),
                Some(_) | None => took.div_f64(sharing_factor(pending.sharers)),
            };
            self.learned.insert(pending.kind.clone(), learned);
            if replan {
                self.replan();
            }
        }
        let mut replies = pending.replies.into_iter();
        let last = replies.next_back();
        for reply in replies {
            // A waiter that gave up (timeout, cancelled run) no longer listens.
            let _ignored = reply.send(match &result {
                Ok(status) => Ok(status.clone()),
                Err(error) => Err(error.clone()),
            });
        }
        if let Some(reply) = last {
            let _ignored = reply.send(result);
        }
    }

    async fn poll_list(&mut self) -> Result<Vec<TaskStatus>, PveError> {
        // Running and finished tasks in one list: the active ones first, then the archive
        // back to the oldest task waited for (it started no earlier than its UPID says).
        let since = self.pending.keys().filter_map(|u| starttime_of(u)).min();
        let query = TaskListQuery {
            source: "all",
            since,
            limit: self.options.list_limit,
        };
        let listed = match self.api.node_tasks(&self.node, &query).await {
            Ok(listed) => listed,
            Err(PveError::Forbidden { .. }) => {
                self.list_allowed = false;
                return self.poll_each().await;
            }
            Err(error) => return Err(error),
        };
        let mut stopped = Vec::new();
        let mut unlisted = Vec::new();
        for upid in self.pending.keys() {
            let mut entries = listed.iter().filter(|entry| &entry.upid == upid).peekable();
            if entries.peek().is_none() {
                unlisted.push(upid.clone());
                continue;
            }
            // An ended task may be listed twice (not yet archived, and archived): any entry
            // with an exit status says it stopped.
            if let Some(entry) =
                entries.find(|entry| entry.status.as_deref().is_some_and(|s| s != "RUNNING"))
            {
                stopped.push(stopped_status(entry));
            }
        }
        for upid in unlisted {
            // Beyond the listed part of the archive: ask the task itself.
            let status = self.api.task_status(&self.node, &Upid(upid)).await?;
            if status.status == "stopped" {
                stopped.push(status);
            }
        }
        Ok(stopped)
    }

    /// One status request per task that is due a look.
    async fn poll_each(&mut self) -> Result<Vec<TaskStatus>, PveError> {
        let now = Instant::now();
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_look <= now)
            .map(|(upid, _)| upid.clone())
            .collect();
        let mut stopped = Vec::new();
        for upid in due {
            let status = self.api.task_status(&self.node, &Upid(upid)).await?;
            if status.status == "stopped" {
                stopped.push(status);
            }
        }
        Ok(stopped)
    }
}

/// A list entry of a task that ended, as its status request would answer.
fn stopped_status(entry: &TaskListEntry) -> TaskStatus {
    TaskStatus {
        upid: entry.upid.clone(),
        status: "stopped".to_owned(),
        exitstatus: entry.status.clone(),
        kind: entry.kind.clone(),
        node: entry.node.clone(),
        id: entry.id.clone(),
        starttime: entry.starttime,
    }
}

/// Task types whose length does not depend on bytes moved or on other tasks. An upload
/// (`imgcopy`) counts: provision uploads only seed ISOs of about 1 MiB, whose upload is the
/// storage's per-operation overhead.
fn fixed_length(kind: &str) -> bool {
    matches!(
        kind,
        "qmstart" | "qmresize" | "imgdel" | "imgcopy" | "qmconfig" | "qmstop"
    )
}

/// Task types that move a cloud image's bytes through a storage whenever provision runs them
/// (a download, a create that imports), and so share its bandwidth with the others of their
/// type. A clone moves bytes only when it is a full one.
fn shares_bandwidth(kind: &str) -> bool {
    matches!(kind, "download" | "qmcreate")
}

/// `UPID:node:pid:pstart:starttime:type:id:user:` → its type.
fn kind_of(upid: &Upid) -> &str {
    upid.0.split(':').nth(5).unwrap_or("")
}

/// The UPID's `pstart` (hex clock ticks since the node's boot).
fn pstart_of(upid: &str) -> Option<u64> {
    upid.split(':')
        .nth(3)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
}

/// The UPID's start time (hex seconds since the epoch).
fn starttime_of(upid: &str) -> Option<u64> {
    upid.split(':')
        .nth(4)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_upid_tells_its_workers_start_in_clock_ticks() {
        let upid = "UPID:pve1:000A1B2C:0001E240:6750A3F1:qmcreate:101:root@pam:";
        assert_eq!(pstart_of(upid), Some(0x0001_E240));
        assert_eq!(starttime_of(upid), Some(0x6750_A3F1));
        assert_eq!(kind_of(&Upid(upid.to_owned())), "qmcreate");
        // 123456 ticks of 10 ms.
        assert!((pstart_seconds(0x0001_E240) - 1_234.56).abs() < 1e-9);
        assert_eq!(pstart_of("UPID:pve1:x"), None);
    }

    #[test]
    fn a_late_waiter_is_dated_back_to_its_start_even_on_a_node_up_for_years() {
        let origin = Instant::now();
        let mut clock = PstartClock::new(origin);
        let at = |ms: u64| origin + Duration::from_millis(ms);
        // Unknown until a task was seen: the waiter's own time.
        assert_eq!(clock.started(at(500), Some(7)), at(500));
        // The node has been up three years (far beyond what this process's clock can reach
        // back to); a prompt waiter at 100 ms for a task of tick T ties the two clocks.
        let booted = 100 * 86_400 * 365 * 3;
        clock.saw(at(100), booted);
        // A task that started 600 ms later (60 ticks), asked about at 1000 ms: it started at
        // 700 ms.
        let started = clock.started(at(1_000), Some(booted + 60));
        let off = started
            .duration_since(at(700))
            .max(at(700).duration_since(started));
        assert!(off < Duration::from_millis(1), "{off:?}");
        // A later, slower waiter never moves the boot later; a prompter one moves it earlier.
        clock.saw(at(2_000), booted + 60);
        assert!(clock.started(at(1_000), Some(booted + 60)) <= at(701));
        // Never after it was asked about.
        assert_eq!(clock.started(at(50), Some(booted + 1_000)), at(50));
        assert_eq!(clock.started(at(900), None), at(900));
    }

    #[test]
    fn byte_moving_tasks_expect_to_share_their_storage() {
        assert!((sharing_factor(1) - 1.0).abs() < 1e-9);
        assert!((sharing_factor(7) - 4.6).abs() < 1e-9);
        assert!((sharing_factor(0) - 1.0).abs() < 1e-9);
        assert!(shares_bandwidth("qmcreate") && shares_bandwidth("download"));
        assert!(!shares_bandwidth("qmclone") && !shares_bandwidth("qmstart"));
        // Fixed-length tasks do not share: their first look is their learned length.
        assert!(fixed_length("imgdel") && !fixed_length("qmcreate"));
    }
}
