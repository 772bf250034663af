//! Local files written so that a crash leaves the old or the new content and a secret is never readable
//! by others, not even for a moment: private directories (0700) and atomic writes with the final mode.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// A local file operation that failed, naming the action and the path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError {
        action,
        path,
        source,
    }
}

/// The `action` of a [`FileError`] refusing a file or directory others could have written.
pub const UNTRUSTED: &str = "trust";

impl FileError {
    /// Whether this refuses a path for its owner or mode (a user error with a fix in the message).
    pub fn is_untrusted(&self) -> bool {
        self.action == UNTRUSTED
    }
}

impl FileError {
    /// The underlying I/O error with the path and action folded into its message (for error enums
    /// of other layers that carry a path and an `io::Error`).
    pub fn into_io(self) -> std::io::Error {
        let kind = self.source.kind();
        std::io::Error::new(kind, format!("cannot {}: {}", self.action, self.source))
    }
}

/// The effective user id of this process.
pub fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Refuses `path` (file or directory) unless it is owned by the current user (or root) and not
/// writable by group or others: what provision trusts from there (tokens, keys, binaries pushed to
/// every node as root) must not be replaceable by another local user. The error names the fix.
pub fn check_trusted(path: &Path) -> Result<(), FileError> {
    use std::os::unix::fs::MetadataExt as _;
    let metadata = fs::metadata(path).map_err(io("inspect", path))?;
    let uid = current_uid();
    // The real path, so that the command in the message works from any directory.
    let real = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let shown = real.display();
    let problem = if metadata.uid() != uid && metadata.uid() != 0 {
        Some(format!(
            "it is owned by uid {}, not by you (uid {uid}); fix: `chown {uid} {shown}` (or remove it)",
            metadata.uid()
        ))
    } else if metadata.mode() & 0o022 != 0 {
        let narrow = if metadata.is_dir() { "700" } else { "600" };
        Some(format!(
            "it is writable by group or others (mode {:o}); fix: `chmod {narrow} {shown}`",
            metadata.mode() & 0o7777
        ))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(message) => Err(FileError {
            action: UNTRUSTED,
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, message),
        }),
    }
}

/// Whether a file can be read by users other than its owner (a token file that should be 0600).
pub fn readable_by_others(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|metadata| metadata.permissions().mode() & 0o044 != 0)
}

/// Reads a private file after [`check_trusted`]; `None` when it does not exist.
pub fn read_trusted(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io("inspect", path)(error)),
        Ok(_) => check_trusted(path)?,
    }
    fs::read(path).map(Some).map_err(io("read", path))
}

/// Creates `dir` and its missing parents with mode 0700, whatever the umask (the mode is set
/// explicitly after each create). An existing `dir` is kept as the user set it, but refused by
/// [`check_trusted`] when another user owns it or group/others may write it.
pub fn create_private_dir(dir: &Path) -> Result<(), FileError> {
    if dir.is_dir() {
        return check_trusted(dir);
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        create_private_dir(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io("restrict", dir))
        }
        // Created meanwhile by another process.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {
            check_trusted(dir)
        }
        Err(error) => Err(io("create", dir)(error)),
    }
}

/// Replaces `path` with `bytes` and `mode`: a temporary file in the same directory, created with `mode`
/// (never wider), fsynced, renamed into place, then the directory fsynced. The directory must exist.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    // Unique per writer: two threads or processes replacing the same file never share a temporary.
    let temporary = dir.join(format!(
        ".{name}.tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)
            .map_err(io("create", &temporary))?;
        // The mode given at creation is narrowed by the umask.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io("restrict", &temporary))?;
        file.write_all(bytes).map_err(io("write", &temporary))?;
        file.sync_all().map_err(io("fsync", &temporary))?;
        fs::rename(&temporary, path).map_err(io("rename into place", path))
    })();
    if written.is_err() {
        // Best effort: the error that matters is the one returned.
        fs::remove_file(&temporary).ok();
    }
    written?;
    let directory = fs::File::open(dir).map_err(io("open", dir))?;
    directory.sync_all().map_err(io("fsync", dir))
}

/// Writes `bytes` to `path` as a private file (0600, parents created 0700) unless it already holds
/// exactly that with that mode; returns whether it wrote.
pub fn write_private_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, FileError> {
    let unchanged = fs::read(path).is_ok_and(|existing| existing == bytes)
        && fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o600);
    if unchanged {
        return Ok(false);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    write_atomic(path, bytes, 0o600)?;
    Ok(true)
}

/// A path from a profile or config file: `~/` stands for `$HOME`.
pub fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(rest),
        None => PathBuf::from(path),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn private_dir_is_0700_and_existing_dirs_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o750, "an existing directory is the user's");
    }

    #[test]
    fn missing_parents_are_private_too_and_foreign_writable_dirs_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/c");
        create_private_dir(&dir).unwrap();
        for path in [root.path().join("a"), root.path().join("a/b"), dir.clone()] {
            assert_eq!(mode(&path), 0o700, "{}", path.display());
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let error = create_private_dir(&dir).unwrap_err();
        assert!(error.is_untrusted());
        let message = error.to_string();
        assert!(
            message.contains(&format!("chmod 700 {}", dir.display())),
            "{message}"
        );
    }

    #[test]
    fn trusted_reads_refuse_group_writable_files() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("token");
        assert!(read_trusted(&path).unwrap().is_none());
        fs::write(&path, "x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_trusted(&path).unwrap().unwrap(), b"x");
        assert!(!readable_by_others(&path));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o664)).unwrap();
        assert!(readable_by_others(&path));
        let message = read_trusted(&path).unwrap_err().to_string();
        assert!(message.contains("chmod 600"), "{message}");
    }

    #[test]
    fn atomic_write_replaces_content_and_mode_and_leaves_no_temporary() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("f");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), 0o600);
        let names: Vec<_> = fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let error = write_atomic(&root.path().join("missing/f"), b"x", 0o600).unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn private_write_happens_only_on_change() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("secrets/kubeconfig");
        assert!(write_private_if_changed(&path, b"a").unwrap());
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert!(!write_private_if_changed(&path, b"a").unwrap());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            write_private_if_changed(&path, b"a").unwrap(),
            "a wider mode is a change"
        );
        assert!(write_private_if_changed(&path, b"b").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"b");
    }
}
