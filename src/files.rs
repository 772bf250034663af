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

/// Creates `dir` with mode 0700 when it is missing (its missing parents get the default mode); an
/// existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> Result<(), FileError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        // Created meanwhile by another process.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
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
