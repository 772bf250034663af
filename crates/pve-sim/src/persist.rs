//! Crash-safe persistence of the simulated cluster (`--state-file`, `.provision/sim/state.json`).
//!
//! One writer per simulator: a mutation only marks the state dirty; a dedicated thread coalesces
//! the marks (a short debounce) and saves once for all of them, appending only the entries that
//! changed to the state file's journal ([`crate::journal`]); the first save of a process, a clean
//! stop and a journal that outgrew the snapshot write a whole snapshot. A snapshot goes to a new temp
//! file in the same directory (created exclusively with mode 0600, so a file or symlink planted
//! there is never opened), is fsynced, renamed over the state file, and the directory is fsynced:
//! a reader (or a process killed with SIGKILL) sees the previous or the next complete file, never
//! a torn one. [`crate::SimHandle::shutdown`] and dropping the simulator flush synchronously.
//!
//! The file stays small: finished tasks beyond [`FINISHED_TASKS_PER_NODE`] per node are pruned,
//! completed upload tasks drop their payload, and an uploaded image is persisted only as the
//! NoCloud seed files the simulated guest reads, with private keys removed (non-seed uploads keep
//! only their size).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use crate::SimError;
use crate::iso9660;
use crate::state::{Shared, State, Task};

/// Finished tasks kept per node (every running task is kept): enough for a client polling a
/// task after a burst of others finished on the same node, bounded for a long-running server.
pub(crate) const FINISHED_TASKS_PER_NODE: usize = 200;

/// How long the writer waits for more changes before writing one snapshot for all of them.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// Temp files of a killed process older than this are removed at start.
const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

/// The seed files the simulated guest reads from a NoCloud ISO.
const SEED_FILES: [&str; 3] = ["user-data", "meta-data", "network-config"];

/// Reads the state file and replays its journal ([`crate::journal`]); `None` when it does not
/// exist.
pub(crate) fn load(path: &Path) -> Result<Option<State>, SimError> {
    remove_stale_temp_files(path);
    let Some(value) = read_value(path)? else {
        return Ok(None);
    };
    serde_json::from_value::<State>(value)
        .map(Some)
        .map_err(|source| SimError::StateParse {
            path: path.display().to_string(),
            source,
        })
}

/// The saved state as JSON (snapshot plus journal); `None` when there is no state file.
pub(crate) fn read_value(path: &Path) -> Result<Option<serde_json::Value>, SimError> {
    match crate::journal::read(path) {
        Ok(None) => Ok(None),
        Ok(Some(Ok(value))) => Ok(Some(value)),
        Ok(Some(Err(source))) => Err(SimError::StateParse {
            path: path.display().to_string(),
            source,
        }),
        Err(source) => Err(SimError::StateRead {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Credentials belong to this start, not to the file: the tokens' secrets and the users'
/// passwords of `inventory` replace those a loaded state was saved with.
pub(crate) fn apply_credentials(state: &mut State, inventory: &crate::Inventory) {
    for token in &mut state.inventory.tokens {
        if let Some(current) = inventory.tokens.iter().find(|t| t.tokenid == token.tokenid) {
            token.secret.clone_from(&current.secret);
        }
    }
    for user in &mut state.inventory.users {
        if let Some(current) = inventory.users.iter().find(|u| u.userid == user.userid) {
            user.password.clone_from(&current.password);
        }
    }
}

/// `.state.json.XXXXXX.tmp` beside `path`.
fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.")
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        Some(_) | None => PathBuf::from("."),
    }
}

/// Removes temp files a killed writer left behind (old enough not to be another live writer's).
fn remove_stale_temp_files(path: &Path) {
    let prefix = temp_prefix(path);
    let Ok(entries) = std::fs::read_dir(directory_of(path)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(&prefix) && name.ends_with(".tmp")) {
            continue;
        }
        // DirEntry::metadata does not follow symlinks: a planted one is judged and removed itself.
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if old && let Err(error) = std::fs::remove_file(entry.path()) {
            tracing::warn!(%error, file = %entry.path().display(), "cannot remove a stale temp file");
        }
    }
}

/// Replaces `path` with `bytes` atomically and durably: exclusive new temp file (0600) in the
/// same directory, fsync, rename, fsync of the directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_keep(path, bytes).map(drop)
}

/// [`write_atomically`], keeping the file open for appending (the journal).
pub(crate) fn write_atomically_keep(path: &Path, bytes: &[u8]) -> std::io::Result<std::fs::File> {
    let dir = directory_of(path);
    // tempfile: a random name opened with O_CREAT|O_EXCL (never follows a symlink), mode 0600.
    let mut temp = tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .suffix(".tmp")
        .tempfile_in(&dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    let file = temp.persist(path).map_err(|error| error.error)?;
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(file)
}

#[derive(Default)]
struct Flags {
    dirty: bool,
    stop: bool,
}

/// The single writer of one state file.
pub(crate) struct Writer {
    path: PathBuf,
    flags: Arc<(Mutex<Flags>, Condvar)>,
    /// Held while a save is taken and written: one write at a time.
    writing: Mutex<crate::journal::Journal>,
    /// Bytes written to the state file and its journal so far.
    written: std::sync::atomic::AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Writer {
    pub fn new(path: PathBuf) -> Writer {
        Writer {
            writing: Mutex::new(crate::journal::Journal::new(path.clone())),
            path,
            flags: Arc::new((Mutex::new(Flags::default()), Condvar::new())),
            written: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Something changed: the writer thread saves soon.
    pub fn mark_dirty(&self) {
        let (flags, wake) = &*self.flags;
        lock(flags).dirty = true;
        wake.notify_all();
    }

    /// Starts the writer thread; it ends when the simulator is dropped.
    pub fn spawn(&self, shared: Weak<Shared>) -> std::io::Result<()> {
        let flags = self.flags.clone();
        std::thread::Builder::new()
            .name("pve-sim-state-writer".to_owned())
            .spawn(move || writer_loop(&flags, &shared))
            .map(drop)
    }

    /// Stops the writer thread (after the caller's final [`Writer::write`]).
    pub fn stop(&self) {
        let (flags, wake) = &*self.flags;
        lock(flags).stop = true;
        wake.notify_all();
    }

    /// Saves `state` now: what changed since the last save goes to the journal, or, when
    /// `full` (a clean stop), a whole snapshot ([`crate::journal`]).
    pub fn write(&self, state: &Mutex<State>, full: bool) {
        let mut journal = lock(&self.writing);
        // Cleared before the save: a change made while writing marks it dirty again.
        lock(&self.flags.0).dirty = false;
        let value = match serde_json::to_value(&*lock(state)) {
            Ok(value) => value,
            Err(error) => {
                tracing::error!(%error, "cannot serialize simulator state");
                return;
            }
        };
        let bytes = match journal.save(value, full) {
            Ok(crate::journal::Saved::Nothing) => 0,
            Ok(crate::journal::Saved::Journal(bytes) | crate::journal::Saved::Snapshot(bytes)) => {
                bytes
            }
            Err(error) => {
                tracing::error!(%error, path = %self.path.display(), "cannot write simulator state");
                return;
            }
        };
        self.written
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes written to the state file and its journal so far.
    pub fn bytes_written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_dirty(&self) -> bool {
        lock(&self.flags.0).dirty
    }
}

fn writer_loop(flags: &(Mutex<Flags>, Condvar), shared: &Weak<Shared>) {
    let (mutex, wake) = flags;
    loop {
        {
            let guard = lock(mutex);
            let guard = wake
                .wait_while(guard, |f| !f.dirty && !f.stop)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if guard.stop {
                return;
            }
            // Debounce: let a burst of changes land in one snapshot.
            let (guard, _) = wake
                .wait_timeout_while(guard, DEBOUNCE, |f| !f.stop)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if guard.stop {
                return;
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.flush();
    }
}

/// Keeps every running task and the newest [`FINISHED_TASKS_PER_NODE`] finished ones per node.
pub(crate) fn prune_finished_tasks(tasks: &mut Vec<Task>) {
    let mut seen: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let mut keep = vec![true; tasks.len()];
    for (index, task) in tasks.iter().enumerate().rev() {
        if task.running {
            continue;
        }
        let count = seen.entry(task.node.clone()).or_default();
        *count += 1;
        if *count > FINISHED_TASKS_PER_NODE {
            keep[index] = false;
        }
    }
    let mut flags = keep.into_iter();
    tasks.retain(|_| flags.next().unwrap_or(true));
}

/// How an uploaded image is kept in the state file: only the NoCloud seed files the simulated
/// guest reads (user-data without private keys), rebuilt into an image when loaded; anything
/// else is not kept (older files with the whole image as base64 still load).
pub(crate) mod volume_data {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum OnDisk {
        Seed { seed: BTreeMap<String, String> },
        Base64(String),
    }

    pub fn serialize<S: Serializer>(data: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match data.as_deref().and_then(super::seed_for_disk) {
            Some(seed) => s.serialize_some(&OnDisk::Seed { seed }),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<OnDisk>::deserialize(d)? {
            None => Ok(None),
            Some(OnDisk::Base64(text)) => base64::engine::general_purpose::STANDARD
                .decode(text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            Some(OnDisk::Seed { seed }) => {
                let files: Vec<(&str, &[u8])> = seed
                    .iter()
                    .map(|(name, text)| (name.as_str(), text.as_bytes()))
                    .collect();
                Ok(Some(crate::iso9660::write_image(&files, true)))
            }
        }
    }
}

/// The seed files of a NoCloud image, user-data stripped of private keys; `None` when `image`
/// is not a seed (or its user-data cannot be made safe to keep).
fn seed_for_disk(image: &[u8]) -> Option<std::collections::BTreeMap<String, String>> {
    let mut seed = std::collections::BTreeMap::new();
    for name in SEED_FILES {
        if let Ok(Some(bytes)) = iso9660::read_file(image, name) {
            seed.insert(
                name.to_owned(),
                String::from_utf8_lossy(&bytes).into_owned(),
            );
        }
    }
    let user_data = seed.get_mut("user-data")?;
    *user_data = without_private_keys(user_data)?;
    Some(seed)
}

/// user-data without its `ssh_keys.*_private` entries (what the simulated guest never needs:
/// it answers with the public keys); `None` if it cannot be parsed or still holds a key.
fn without_private_keys(user_data: &str) -> Option<String> {
    let mut document: serde_yaml_ng::Value = serde_yaml_ng::from_str(user_data).ok()?;
    if let Some(keys) = document
        .get_mut("ssh_keys")
        .and_then(serde_yaml_ng::Value::as_mapping_mut)
    {
        keys.retain(|key, _| !key.as_str().is_some_and(|k| k.contains("private")));
    }
    let text = format!(
        "#cloud-config\n{}",
        serde_yaml_ng::to_string(&document).ok()?
    );
    (!text.contains("PRIVATE KEY")).then_some(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const USER_DATA: &str = "#cloud-config\nhostname: vm1\nssh_keys:\n  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n    abc\n    -----END OPENSSH PRIVATE KEY-----\n  ed25519_public: ssh-ed25519 AAAA vm1\n";

    #[test]
    fn a_seed_is_kept_without_its_private_key() {
        let image = iso9660::write_image(
            &[
                ("user-data", USER_DATA.as_bytes()),
                ("meta-data", b"local-hostname: vm1\n"),
            ],
            true,
        );
        let seed = seed_for_disk(&image).unwrap();
        let user_data = &seed["user-data"];
        assert!(!user_data.contains("PRIVATE"), "{user_data}");
        assert!(user_data.contains("ssh-ed25519 AAAA vm1"), "{user_data}");
        assert!(user_data.starts_with("#cloud-config\n"));
        assert_eq!(seed["meta-data"], "local-hostname: vm1\n");
        assert!(seed_for_disk(b"not an image").is_none());
    }

    #[test]
    fn pruning_keeps_running_tasks_and_the_newest_finished_per_node() {
        let task = |node: &str, n: usize, running: bool| Task {
            upid: format!("{node}-{n}"),
            node: node.to_owned(),
            kind: "qmstart".to_owned(),
            id: String::new(),
            user: String::new(),
            pid: 0,
            pstart: 0,
            starttime: 0,
            running,
            exitstatus: None,
            endtime: None,
            log: Vec::new(),
            due_ms: 0,
            held: false,
            doomed: None,
            action: crate::state::TaskAction::Start { vmid: 1 },
            wget: None,
        };
        let mut tasks = vec![task("a", 0, true)];
        for n in 1..=FINISHED_TASKS_PER_NODE + 5 {
            tasks.push(task("a", n, false));
            tasks.push(task("b", n, false));
        }
        prune_finished_tasks(&mut tasks);
        assert!(tasks.iter().any(|t| t.upid == "a-0"));
        assert!(!tasks.iter().any(|t| t.upid == "a-5"));
        assert!(tasks.iter().any(|t| t.upid == "a-6"));
        assert_eq!(tasks.len(), 1 + 2 * FINISHED_TASKS_PER_NODE);
    }
}
