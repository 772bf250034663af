//! The workspace lock: an exclusive OS file lock on `.provision/lock` whose content names the
//! holder (pid, host, command, start time) so a second run can say who is in the way.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::clock::human_time;

/// How long a lock that is being released (see [`StateLock::acquire`]) is waited for.
const RELEASE_WAIT: Duration = Duration::from_secs(3);
const RELEASE_POLL: Duration = Duration::from_millis(20);

/// Who holds the lock (written into the lock file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub pid: u32,
    pub host: String,
    pub command: String,
    /// Seconds since the Unix epoch.
    pub since: u64,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = UNIX_EPOCH + Duration::from_secs(self.since);
        let age = SystemTime::now()
            .duration_since(since)
            .map(human_duration)
            .unwrap_or_else(|_| "in the future: clocks differ".to_owned());
        write!(
            f,
            "`provision {}` (pid {} on {}), running since {} ({age})",
            self.command,
            self.pid,
            self.host,
            human_time(since)
        )
    }
}

/// `42 s ago`, `3 min ago`, `2 h 5 min ago`, `3 days ago`.
fn human_duration(age: Duration) -> String {
    let seconds = age.as_secs();
    match seconds {
        0..60 => format!("{seconds} s ago"),
        60..3600 => format!("{} min ago", seconds / 60),
        3600..86_400 => format!("{} h {} min ago", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{} days ago", seconds / 86_400),
    }
}

/// Held for as long as the value lives; the OS releases it when the process dies.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

impl StateLock {
    /// Take the lock without waiting.
    pub fn acquire(path: &Path, command: &str) -> Result<Self, StateError> {
        let io = |action: &'static str| {
            let path = path.to_path_buf();
            move |source| StateError::Io {
                action,
                path,
                source,
            }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io("open"))?;
        // Whatever the umask: another user must not be able to write a fake holder into it.
        if file
            .metadata()
            .is_ok_and(|m| m.uid() == crate::files::current_uid())
        {
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(io("restrict"))?;
        }
        // A lock whose holder has already cleared its name (it is exiting), or that this very
        // process still holds through a child between fork and exec (an flock is shared with
        // the child until it execs), is released within moments: wait for it, briefly. A lock
        // named by another live run fails at once.
        let mut waited = Duration::ZERO;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let mut content = String::new();
                    file.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
                    file.read_to_string(&mut content).map_err(io("read"))?;
                    let holder = serde_json::from_str::<LockHolder>(&content).ok();
                    let releasing = holder
                        .as_ref()
                        .is_none_or(|holder| holder.pid == std::process::id());
                    if releasing && waited < RELEASE_WAIT {
                        std::thread::sleep(RELEASE_POLL);
                        waited += RELEASE_POLL;
                        continue;
                    }
                    return Err(StateError::Locked {
                        path: path.to_path_buf(),
                        holder: holder.map_or_else(
                            || "an unknown process".to_owned(),
                            |holder| holder.to_string(),
                        ),
                    });
                }
                Err(TryLockError::Error(source)) => return Err(io("lock")(source)),
            }
        }
        let holder = LockHolder {
            pid: std::process::id(),
            host: host_name(),
            command: command.to_owned(),
            since: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0),
        };
        let content = serde_json::to_string(&holder).unwrap_or_default();
        file.set_len(0).map_err(io("truncate"))?;
        file.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
        file.write_all(content.as_bytes()).map_err(io("write"))?;
        file.sync_all().map_err(io("fsync"))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Clear the holder so a stale name is never shown; the OS lock goes with the handle.
        if self.file.set_len(0).is_err() {
            tracing::debug!(path = %self.path.display(), "could not clear the lock file");
        }
    }
}

fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn second_holder_fails_fast_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = StateLock::acquire(&path, "up --profile a").unwrap();
        let error = StateLock::acquire(&path, "down").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("up --profile a"), "{message}");
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        drop(first);
        StateLock::acquire(&path, "down").unwrap();
    }

    #[test]
    fn times_are_human() {
        let at = |seconds: u64| human_time(UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(at(1_796_119_445), "2026-12-01 10:04:05 UTC");
        assert_eq!(human_duration(Duration::from_secs(42)), "42 s ago");
        assert_eq!(human_duration(Duration::from_secs(185)), "3 min ago");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2 h 5 min ago");
    }
}
