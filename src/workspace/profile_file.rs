//! `provision init --profile NAME`: a built-in profile copied into the workspace's `profiles/`, to
//! adapt. Written only where nothing is (an existing file is kept, as `init` keeps every file), and
//! never through a symbolic link: `profiles/` must be a real directory, the file is created with
//! `O_CREAT | O_EXCL`, which fails on a symbolic link, even a dangling one, instead of following it.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;

use super::{InitAction, Workspace, WorkspaceError};

impl Workspace {
    /// `profiles/`: the workspace's own profiles, which win over built-in ones of the same name.
    pub fn profiles_dir(&self) -> PathBuf {
        self.root.join("profiles")
    }

    /// Writes `text` to `profiles/NAME.toml` (0644) unless a file (or link) is there already.
    pub fn add_profile(
        &self,
        name: &str,
        text: &str,
    ) -> Result<(PathBuf, InitAction), WorkspaceError> {
        let dir = self.profiles_dir();
        match std::fs::symlink_metadata(&dir) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => {
                return Err(WorkspaceError::Untrusted {
                    path: dir,
                    message: "it is not a directory (a symbolic link or a file); \
                              provision writes profiles only into a real profiles/ directory"
                        .to_owned(),
                });
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&dir).map_err(WorkspaceError::io("create", &dir))?;
            }
            Err(source) => return Err(WorkspaceError::io("inspect", &dir)(source)),
        }
        let path = dir.join(format!("{name}.toml"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path);
        let mut file = match file {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                return Ok((path, InitAction::Kept));
            }
            Err(source) => return Err(WorkspaceError::io("create", &path)(source)),
        };
        // The mode given at creation is narrowed by the umask.
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(WorkspaceError::io("set the mode of", &path))?;
        file.write_all(text.as_bytes())
            .map_err(WorkspaceError::io("write", &path))?;
        file.sync_all()
            .map_err(WorkspaceError::io("fsync", &path))?;
        Ok((path, InitAction::Created))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_written_once_and_never_through_a_link() {
        let root = tempfile::tempdir().unwrap();
        let workspace = Workspace::open(root.path());
        let (path, action) = workspace.add_profile("homelab-ha", "# mine\n").unwrap();
        assert_eq!(action, InitAction::Created);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let (_, action) = workspace.add_profile("homelab-ha", "# other\n").unwrap();
        assert_eq!(action, InitAction::Kept);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");

        let target = root.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, workspace.profiles_dir().join("a100-8x.toml")).unwrap();
        let (_, action) = workspace.add_profile("a100-8x", "x").unwrap();
        assert_eq!(action, InitAction::Kept);
        assert!(!target.exists(), "a dangling link is not followed");

        let other = tempfile::tempdir().unwrap();
        let linked = Workspace::open(other.path());
        std::os::unix::fs::symlink(root.path(), linked.profiles_dir()).unwrap();
        let error = linked.add_profile("mlops", "x").unwrap_err();
        assert!(matches!(error, WorkspaceError::Untrusted { .. }), "{error}");
        assert!(!root.path().join("mlops.toml").exists());
    }
}
