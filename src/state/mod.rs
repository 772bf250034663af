//! Workspace state: what provision created on Proxmox, kept in `.provision/state.json`.
//!
//! Three guarantees: one writer at a time ([`StateLock`], an exclusive OS lock on
//! `.provision/lock` naming its holder), no torn file (every write goes to a temp file that is
//! fsynced, renamed over the old one, then the directory is fsynced), and no untracked VM (an
//! intent record is written *before* each create, so a crash between the request and its
//! answer leaves a record that the next run reconciles with what Proxmox shows).

mod lock;
mod replace;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::profile::model::Role;

pub use lock::{LockHolder, StateLock};
pub use provision_base::time::human_time;
pub use replace::{ReplaceJournal, ReplaceStep};

/// Current on-disk format version.
pub const STATE_VERSION: u32 = 1;

/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid provision state file: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} has state format version {found}; this provision understands {STATE_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("the workspace lock {} is held by {holder}", path.display())]
    Locked { path: PathBuf, holder: String },
    #[error("state belongs to cluster `{found}`, the profile describes `{expected}`")]
    ClusterMismatch { expected: String, found: String },
    #[error("`{name}` is not a cluster name")]
    ClusterName { name: String },
    /// Another user could write it; the message names the `chmod`/`chown` that fixes it.
    #[error("refusing {}: {message}", path.display())]
    Untrusted { path: PathBuf, message: String },
}

impl StateError {
    /// Whether the user can fix it (exit 1) rather than a failure of the machine (exit 2).
    pub fn is_user_error(&self) -> bool {
        match self {
            StateError::Io { .. } => false,
            StateError::Corrupt { .. }
            | StateError::Version { .. }
            | StateError::Locked { .. }
            | StateError::ClusterMismatch { .. }
            | StateError::ClusterName { .. }
            | StateError::Untrusted { .. } => true,
        }
    }

    /// What to do about it, for the `hint:` line.
    pub fn hint(&self) -> Option<String> {
        match self {
            StateError::Io { .. } => None,
            StateError::Corrupt { path, .. } => {
                // The real path, so that the command works from any directory.
                let path = &fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                let backup = backup_path(path);
                let restore = if backup.is_file() {
                    format!(
                        "restore the copy kept before the last write (`cp {} {}`), or ",
                        backup.display(),
                        path.display()
                    )
                } else {
                    String::new()
                };
                Some(format!(
                    "{restore}move it aside (`mv {} {}.corrupt`): the next `up` re-adopts the VMs \
                     tagged for the cluster on Proxmox",
                    path.display(),
                    path.display()
                ))
            }
            StateError::Version { .. } => {
                Some("use the provision version that wrote this workspace".to_owned())
            }
            // The OS releases the lock when its holder exits: there is never a file to delete.
            StateError::Locked { .. } => Some(
                "wait for that run to finish (the lock is released when its process exits), \
                 or stop it"
                    .to_owned(),
            ),
            StateError::Untrusted { .. } => Some(
                "provision keeps its state, secrets and the k3s binary cache there: only you may \
                 write it"
                    .to_owned(),
            ),
            StateError::ClusterMismatch { .. } => Some(
                "use one workspace directory per cluster, or the profile this workspace was \
                 created with"
                    .to_owned(),
            ),
            StateError::ClusterName { .. } => Some(
                "a cluster name is a DNS label: lower-case letters, digits and `-`, at most 63"
                    .to_owned(),
            ),
        }
    }
}

impl crate::error::UserFacing for StateError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        if self.is_user_error() {
            crate::exit::ExitStatus::UserError
        } else {
            crate::exit::ExitStatus::Failure
        }
    }

    fn hint(&self) -> Option<String> {
        StateError::hint(self)
    }
}

/// The previous content of a state file, kept on every write: `state.json.bak`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

/// How far provision got with one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmPhase {
    /// Written before the create request: the VM may or may not exist on Proxmox.
    Intent,
    /// The create task finished (or the VM was adopted); later steps may still be pending.
    Created,
    /// Disk resized, VM running, guest agent answered with the planned address.
    Ready,
}

/// One VM provision manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    pub name: String,
    pub vmid: u32,
    pub node: String,
    pub group: String,
    pub role: Role,
    pub phase: VmPhase,
    /// SHA-256 of the create parameters that were (or are about to be) sent.
    pub params_hash: String,
    #[serde(default)]
    pub address: Option<String>,
    /// Whole PCI devices passed through (`0000:41:00`).
    #[serde(default)]
    pub gpus: Vec<String>,
    /// The cloud-init ISO volume uploaded for this VM (`local:iso/…`).
    #[serde(default)]
    pub iso: Option<String>,
}

/// A template VM provision built from the image on one node (`image.strategy` a clone), which
/// the cluster's VMs are cloned from. Written before its create request, like a VM's intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRecord {
    pub name: String,
    pub vmid: u32,
    pub node: String,
    /// The image volume it was imported from.
    pub image: String,
    /// The storage its base disk is on.
    pub storage: String,
    /// `Intent` until its create task finished, then `Ready`.
    pub phase: VmPhase,
}

/// A volume provision uploaded or downloaded on a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub node: String,
    pub volid: String,
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The cluster name (`cluster.name`) this state belongs to; empty for a fresh workspace.
    #[serde(default)]
    pub cluster: String,
    /// By VM name.
    #[serde(default)]
    pub vms: BTreeMap<String, VmRecord>,
    /// Cloud images downloaded by provision (kept by `down`: shared by later clusters).
    #[serde(default)]
    pub images: Vec<VolumeRecord>,
    /// PCI resource mappings provision created.
    #[serde(default)]
    pub mappings: Vec<String>,
    /// The k3s version phase 2 last converged the cluster to; a different `cluster.k3s_version`
    /// is a rolling upgrade from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s_version: Option<String>,
    /// A `replace-node` in progress (absent when none is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacing: Option<ReplaceJournal>,
    /// Templates provision built for this cluster's clones, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub templates: BTreeMap<String, TemplateRecord>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            cluster: String::new(),
            vms: BTreeMap::new(),
            images: Vec::new(),
            mappings: Vec::new(),
            k3s_version: None,
            replacing: None,
            templates: BTreeMap::new(),
        }
    }
}

impl State {
    /// VMIDs held by this state (intents included: they reserve their id).
    pub fn vmids(&self) -> impl Iterator<Item = u32> + '_ {
        self.vms
            .values()
            .map(|record| record.vmid)
            .chain(self.templates.values().map(|record| record.vmid))
    }

    /// Refuse a state written for another cluster (two profiles sharing one workspace).
    pub fn check_cluster(&self, cluster: &str) -> Result<(), StateError> {
        if self.cluster.is_empty()
            || (self.vms.is_empty() && self.templates.is_empty())
            || self.cluster == cluster
        {
            Ok(())
        } else {
            Err(StateError::ClusterMismatch {
                expected: cluster.to_owned(),
                found: self.cluster.clone(),
            })
        }
    }
}

/// The state file of one workspace, opened under its lock. Dropping it releases the lock.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    state: State,
    _lock: StateLock,
}

impl StateStore {
    /// Lock `dir/lock` (failing fast when held) and load `dir/state.json` (empty when absent).
    /// `command` is recorded in the lock file so a second run can name the holder.
    pub fn open(dir: &Path, command: &str) -> Result<Self, StateError> {
        // Private even when `init` was not run: the state names hosts and secrets live below it.
        crate::files::create_private_dir(dir)?;
        let lock = StateLock::acquire(&dir.join("lock"), command)?;
        let path = dir.join("state.json");
        let state = load(&path)?;
        Ok(Self {
            path,
            state,
            _lock: lock,
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Change the state and persist it atomically before returning.
    pub fn update<R>(&mut self, change: impl FnOnce(&mut State) -> R) -> Result<R, StateError> {
        let mut next = self.state.clone();
        let result = change(&mut next);
        if next != self.state {
            persist(&self.path, &to_bytes(&next)?)?;
            self.state = next;
        }
        Ok(result)
    }

    /// Change the state in memory only, for a caller that persists several changes at once
    /// ([`StateStore::snapshot`], [`persist`]); whether anything changed.
    pub fn change<R>(&mut self, change: impl FnOnce(&mut State) -> R) -> (R, bool) {
        let mut next = self.state.clone();
        let result = change(&mut next);
        let changed = next != self.state;
        if changed {
            self.state = next;
        }
        (result, changed)
    }

    /// The state's file contents as they are now, for [`persist`].
    pub fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        to_bytes(&self.state)
    }
}

/// Replace the state file at `path` with `bytes` atomically, keeping the previous file at
/// [`backup_path`] (0600, atomically) first. The caller holds the workspace lock
/// ([`StateStore`]) and writes one at a time.
pub fn persist(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    match fs::read(path) {
        Ok(previous) => write_atomic(&backup_path(path), &previous)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StateError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    }
    write_atomic(path, bytes)
}

/// Read a state file without locking (for `status` and tests). Absent file → empty state.
pub fn load(path: &Path) -> Result<State, StateError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(source) => {
            return Err(StateError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let state: State = serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    if state.version != STATE_VERSION {
        return Err(StateError::Version {
            path: path.to_path_buf(),
            found: state.version,
        });
    }
    Ok(state)
}

fn to_bytes(state: &State) -> Result<Vec<u8>, StateError> {
    let mut bytes = serde_json::to_vec_pretty(state).map_err(|source| StateError::Corrupt {
        path: PathBuf::from("state.json"),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Replace `path` with `bytes` (0600) so that a crash leaves either the old or the new content:
/// temp file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    Ok(crate::files::write_atomic(path, bytes, 0o600)?)
}

impl From<crate::files::FileError> for StateError {
    fn from(error: crate::files::FileError) -> Self {
        if error.is_untrusted() {
            return StateError::Untrusted {
                message: error.source.to_string(),
                path: error.path,
            };
        }
        StateError::Io {
            action: error.action,
            path: error.path,
            source: error.source,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(name: &str, vmid: u32) -> VmRecord {
        VmRecord {
            name: name.to_owned(),
            vmid,
            node: "pve1".to_owned(),
            group: "workers".to_owned(),
            role: Role::Agent,
            phase: VmPhase::Intent,
            params_hash: "abc".to_owned(),
            address: None,
            gpus: vec![],
            iso: None,
        }
    }

    #[test]
    fn open_creates_the_state_directory_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("workspace/.provision");
        let mut store = StateStore::open(&dir, "test").unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "created without `init`");
        store
            .update(|state| state.vms.insert("a".into(), record("a", 100)))
            .unwrap();
        assert_eq!(mode(&dir.join("state.json")), 0o600);
    }

    #[test]
    fn update_persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = StateStore::open(dir.path(), "up").unwrap();
            store
                .update(|state| {
                    state.cluster = "c".to_owned();
                    state.vms.insert("c-w-1".to_owned(), record("c-w-1", 7101));
                })
                .unwrap();
        }
        let state = load(&dir.path().join("state.json")).unwrap();
        assert_eq!(state.vms["c-w-1"].vmid, 7101);
        assert_eq!(state.cluster, "c");
        // No temp file is left behind.
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn corrupt_file_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("state.json"), b"{not json").unwrap();
        assert!(matches!(
            load(&dir.path().join("state.json")),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn every_write_keeps_the_previous_state_as_a_private_backup() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path(), "up").unwrap();
        store
            .update(|state| state.vms.insert("a".into(), record("a", 100)))
            .unwrap();
        let backup = backup_path(store.path());
        assert!(!backup.exists(), "nothing to keep before the first write");
        store
            .update(|state| state.vms.insert("b".into(), record("b", 101)))
            .unwrap();
        let kept = load(&backup).unwrap();
        assert_eq!(kept.vms.keys().collect::<Vec<_>>(), vec!["a"]);
        let mode = fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        store
            .update(|state| state.vms.insert("c".into(), record("c", 102)))
            .unwrap();
        assert_eq!(load(&backup).unwrap().vms.len(), 2);
    }

    #[test]
    fn corrupt_state_hint_moves_it_aside_with_the_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"{not json").unwrap();
        let error = load(&path).unwrap_err();
        assert!(error.is_user_error());
        let hint = error.hint().unwrap();
        let shown = path.display();
        assert!(
            hint.contains(&format!("`mv {shown} {shown}.corrupt`")),
            "{hint}"
        );
        assert!(hint.contains("re-adopts the VMs"), "{hint}");
        fs::write(backup_path(&path), b"{}").unwrap();
        let hint = load(&path).unwrap_err().hint().unwrap();
        assert!(
            hint.contains(&format!("`cp {shown}.bak {shown}`")),
            "{hint}"
        );
    }

    #[test]
    fn cluster_mismatch_is_refused() {
        let mut state = State {
            cluster: "a".to_owned(),
            ..State::default()
        };
        state.vms.insert("a-1".to_owned(), record("a-1", 1));
        assert!(state.check_cluster("a").is_ok());
        assert!(state.check_cluster("b").is_err());
    }
}
