//! The workspace lock: an exclusive OS file lock on `.provision/lock` whose content names the
//! holder (pid, host, command, start time) so a second run can say who is in the way.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::StateError;

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
        write!(
            f,
            "`provision {}` pid {} on {} since {}",
            self.command, self.pid, self.host, self.since
        )
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
            .open(path)
            .map_err(io("open"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut content = String::new();
                file.read_to_string(&mut content).map_err(io("read"))?;
                let holder = serde_json::from_str::<LockHolder>(&content)
                    .map(|holder| holder.to_string())
                    .unwrap_or_else(|_| "an unknown process".to_owned());
                return Err(StateError::Locked {
                    path: path.to_path_buf(),
                    holder,
                });
            }
            Err(TryLockError::Error(source)) => return Err(io("lock")(source)),
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
}
