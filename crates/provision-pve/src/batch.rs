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
//! `max_interval`. The next poll is the
//! earliest any waiting task wants one, so N concurrent tasks cost one request per poll, not N.

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

/// The same for a task of fixed length ([`fixed_length`]), expected as long as the shortest
/// one of its type seen here.
const FIRST_LOOK_FIXED: f64 = 0.9;

/// After a look that found a task running, the next one comes after this part of the time it
/// has run: the overshoot stays below it, and a task of any length costs a few dozen looks.
const OVERSHOOT: f64 = 0.08;

/// The same for a task whose length depends on the bytes it moves and the tasks it shares its
/// storage with (a download, create, clone): long, looked at from before its expected end, and
/// where an overshoot delays only the steps after it, not the storage the others keep busy.
const OVERSHOOT_LONG: f64 = 0.12;

/// A task type's duration on an idle node with local SSD storage, in seconds (the simulator's
/// figures, crates/pve-sim/README.md "Storage model"): only the ratio between types matters,
/// the poller learns the node's speed from the tasks that end.
pub fn typical_seconds(kind: &str) -> f64 {
    match kind {
        "download" => 20.0,
        "imgcopy" | "imgdel" => 0.5,
        "qmcreate" => 8.0,
        "qmclone" => 25.0,
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
            shared_speed: Arc::clone(&speed),
            list_allowed: true,
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
    added: Instant,
    next_look: Instant,
    replies: Vec<oneshot::Sender<Result<TaskStatus, PveError>>>,
}

struct Actor {
    api: Arc<dyn PveApi>,
    node: NodeName,
    options: PollOptions,
    pending: BTreeMap<String, Pending>,
    /// How long a task of each type took (from being asked about to seen stopped).
    learned: BTreeMap<String, Duration>,
    /// Observed over typical durations ([`typical_seconds`]): the lowest ratio of the tasks
    /// that ended here whose length does not depend on bytes or load (start, resize, delete;
    /// not an upload, which may have run while its request still carried the file).
    speed: Option<f64>,
    shared_speed: Arc<AtomicU64>,
    list_allowed: bool,
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
        let initial = self.options.initial_interval;
        let first = match self.expected(&kind) {
            Some(expected) if fixed_length(&kind) => expected.mul_f64(FIRST_LOOK_FIXED),
            Some(expected) => expected.mul_f64(FIRST_LOOK),
            None => Duration::try_from_secs_f64(typical_seconds(&kind) * self.options.fastest)
                .unwrap_or(initial),
        }
        .max(initial);
        self.pending.insert(
            waiter.upid.0,
            Pending {
                kind,
                added: now,
                next_look: now + first,
                replies: vec![waiter.reply],
            },
        );
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
        let ran = now.duration_since(pending.added);
        let part = if fixed_length(&pending.kind) {
            OVERSHOOT
        } else {
            OVERSHOOT_LONG
        };
        ran.mul_f64(part)
            .max(self.options.initial_interval)
            .min(self.options.max_interval.max(self.options.initial_interval))
    }

    /// One poll: the active list (or each task's status), then the exit statuses of the tasks
    /// that left it.
    async fn poll(&mut self) {
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
            }
        }
    }

    fn resolve(&mut self, upid: &str, result: Result<TaskStatus, PveError>, now: Instant) {
        let Some(pending) = self.pending.remove(upid) else {
            return;
        };
        if result.is_ok() {
            let took = now.duration_since(pending.added);
            if fixed_length(&pending.kind) && pending.kind != "imgcopy" {
                let ratio = took.as_secs_f64() / typical_seconds(&pending.kind);
                let speed = self.speed.map_or(ratio, |speed| speed.min(ratio));
                self.speed = Some(speed);
                self.shared_speed.store(speed.to_bits(), Ordering::Relaxed);
            }
            let learned = match self.learned.get(&pending.kind) {
                Some(shortest) if fixed_length(&pending.kind) => took.min(*shortest),
                Some(_) | None => took,
            };
            self.learned.insert(pending.kind.clone(), learned);
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

/// `UPID:node:pid:pstart:starttime:type:id:user:` → its type.
fn kind_of(upid: &Upid) -> &str {
    upid.0.split(':').nth(5).unwrap_or("")
}

/// The UPID's start time (hex seconds since the epoch).
fn starttime_of(upid: &str) -> Option<u64> {
    upid.split(':')
        .nth(4)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
}
