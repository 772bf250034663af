//! Several clusters in one workspace: each has its own state, lock, secrets, known_hosts and
//! kubeconfig.
//!
//! Layout: the workspace's first cluster keeps the single-cluster layout (`.provision/state.json`,
//! `.provision/secrets/`, `.provision/kubeconfig`), so workspaces written before stay as they
//! are; every other cluster lives in `.provision/clusters/<name>/` with the same files. The
//! first cluster is the one the top-level state names; `up` claims it for its cluster when
//! it names none yet, under `.provision/clusters.lock`, so two concurrent first runs with
//! different names never share it. The simulator's state (`.provision/sim/`) and the k3s
//! binary cache stay shared by every cluster of the workspace.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::state::{self, StateError};

use super::{STATE_DIR, Workspace};

/// Directory (below `.provision/`) of the clusters that are not the workspace's first.
pub const CLUSTERS_DIR: &str = "clusters";

impl Workspace {
    /// The cluster's state, lock, secrets, kubeconfig: `.provision/` (or for further clusters
    /// `.provision/clusters/<name>/`, see [`clusters`]).
    pub fn state_dir(&self) -> PathBuf {
        self.cluster
            .as_ref()
            .map_or_else(|| self.root.join(STATE_DIR), |(_, dir)| dir.clone())
    }

    /// `.provision/secrets/` (0700; files 0600).
    pub fn secrets_dir(&self) -> PathBuf {
        self.state_dir().join("secrets")
    }

    /// Where `up` writes the cluster's kubeconfig.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.state_dir().join("kubeconfig")
    }

    /// `.provision/`: what every cluster of the workspace shares (the simulator's state, the
    /// k3s binary cache, the cluster directories).
    pub fn shared_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// The cluster this workspace view is scoped to (`None`: the unscoped workspace, whose
    /// files are the first cluster's).
    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_ref().map(|(name, _)| name.as_str())
    }

    /// The workspace as cluster `name` sees it, without claiming anything (read-only commands).
    pub fn for_cluster(&self, name: &str) -> Result<Workspace, StateError> {
        check_name(name)?;
        let dir = self.cluster_dir(name, first_cluster(&self.shared_dir())?.as_deref());
        Ok(self.scoped(name, dir))
    }

    /// Like [`Workspace::for_cluster`], for a command that writes state (`up`, `down`): when
    /// the workspace has no first cluster yet, `name` becomes it. Creates the directory.
    pub fn claim_cluster(&self, name: &str) -> Result<Workspace, StateError> {
        check_name(name)?;
        let shared = self.shared_dir();
        crate::files::create_private_dir(&shared)?;
        let lock_path = shared.join("clusters.lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        lock.lock().map_err(io("lock", &lock_path))?;
        let first = first_cluster(&shared)?;
        let dir = self.cluster_dir(name, first.as_deref());
        if dir == shared && first.is_none() {
            let path = shared.join("state.json");
            let mut current = state::load(&path)?;
            current.cluster = name.to_owned();
            state::write_atomic(&path, &state_bytes(&current, &path)?)?;
        }
        crate::files::create_private_dir(&dir)?;
        drop(lock);
        Ok(self.scoped(name, dir))
    }

    fn cluster_dir(&self, name: &str, first: Option<&str>) -> PathBuf {
        let shared = self.shared_dir();
        let own = shared.join(CLUSTERS_DIR).join(name);
        if own.is_dir() {
            return own;
        }
        match first {
            Some(first) if first != name => own,
            Some(_) | None => shared,
        }
    }

    fn scoped(&self, name: &str, dir: PathBuf) -> Workspace {
        Workspace {
            root: self.root.clone(),
            cluster: Some((name.to_owned(), dir)),
        }
    }
}

fn check_name(name: &str) -> Result<(), StateError> {
    if is_cluster_dir_name(name) {
        Ok(())
    } else {
        Err(StateError::ClusterName {
            name: name.to_owned(),
        })
    }
}

/// A cluster name is a DNS label (the profile validates it); anything else never becomes a path.
fn is_cluster_dir_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
}

/// The cluster the top-level state names, if any.
fn first_cluster(shared: &Path) -> Result<Option<String>, StateError> {
    let found = state::load(&shared.join("state.json"))?;
    Ok((!found.cluster.is_empty()).then_some(found.cluster))
}

fn state_bytes(value: &state::State, path: &Path) -> Result<Vec<u8>, StateError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_first_cluster_keeps_the_old_layout_and_others_get_their_own() {
        let root = tempfile::tempdir().unwrap();
        let workspace = Workspace::open(root.path());
        let first = workspace.claim_cluster("a").unwrap();
        assert_eq!(first.state_dir(), root.path().join(".provision"));
        let second = workspace.claim_cluster("b").unwrap();
        assert_eq!(
            second.state_dir(),
            root.path().join(".provision/clusters/b")
        );
        assert_eq!(
            second.kubeconfig_path(),
            root.path().join(".provision/clusters/b/kubeconfig")
        );
        assert_eq!(
            second.secrets_dir(),
            root.path().join(".provision/clusters/b/secrets")
        );
        assert_eq!(
            workspace.for_cluster("a").unwrap().state_dir(),
            first.state_dir()
        );
        assert_eq!(
            workspace.for_cluster("b").unwrap().state_dir(),
            second.state_dir()
        );
        assert_eq!(
            workspace.claim_cluster("a").unwrap(),
            first,
            "claims are stable"
        );
        // One lock per cluster: b's run does not wait for a's, a second run of a does.
        let held = crate::state::StateStore::open(&first.state_dir(), "up a").unwrap();
        assert!(crate::state::StateStore::open(&second.state_dir(), "up b").is_ok());
        assert!(matches!(
            crate::state::StateStore::open(&first.state_dir(), "up a"),
            Err(StateError::Locked { .. })
        ));
        drop(held);
        assert!(workspace.for_cluster("../x").is_err());
        assert!(workspace.claim_cluster("a/b").is_err());
    }

    #[test]
    fn a_workspace_without_a_first_cluster_is_read_without_claiming() {
        let root = tempfile::tempdir().unwrap();
        let workspace = Workspace::open(root.path());
        let view = workspace.for_cluster("x").unwrap();
        assert_eq!(view.state_dir(), root.path().join(".provision"));
        assert!(!root.path().join(".provision/state.json").exists());
    }
}
