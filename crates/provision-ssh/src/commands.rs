//! Pure builders of the shell commands the SSH executor itself runs (file installation, privilege
//! escalation); node and k3s commands live in `nodeprep` / `k3s`.

/// Quotes one word for a POSIX shell (`'…'`, with `'` written as `'\''`); plain words stay readable.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Wraps a command so it runs as root through non-interactive sudo (fails instead of prompting).
pub fn as_root(command: &str) -> String {
    format!("sudo -n sh -c {}", shell_quote(command))
}

/// The directory part of an absolute remote path (`/` for top-level files).
pub fn parent_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(index) => &path[..index],
    }
}

/// Where an upload is staged before verification: beside the target (same file system, so the final
/// `mv` is an atomic rename), hidden and unique per upload.
pub fn staging_path(path: &str, unique: &str) -> String {
    let dir = parent_dir(path);
    let name = &path[path.rfind('/').map_or(0, |index| index + 1)..];
    let dir = if dir == "/" { "" } else { dir };
    format!("{dir}/.{name}.provision-{unique}")
}

/// Creates the directory that will hold `path`.
pub fn prepare_dir(path: &str) -> String {
    format!("mkdir -p -- {}", shell_quote(parent_dir(path)))
}

/// Verifies the staged file's sha256, sets its mode, and renames it over `path`; on a mismatch the staged
/// file is removed and the command prints the hash it found and exits 3.
pub fn verify_and_install(staged: &str, path: &str, sha256_hex: &str, mode: u32) -> String {
    let staged = shell_quote(staged);
    let path = shell_quote(path);
    format!(
        "actual=$(sha256sum -- {staged} | cut -d' ' -f1) && if [ \"$actual\" = {sha256_hex} ]; \
         then chmod {mode:04o} -- {staged} && mv -f -- {staged} {path}; \
         else rm -f -- {staged}; echo \"$actual\"; exit 3; fi"
    )
}

/// Copies a file staged elsewhere (e.g. in `/tmp` by an unprivileged user) next to `path` so that
/// [`verify_and_install`] can rename it atomically.
pub fn move_staged(from: &str, to: &str) -> String {
    format!(
        "cp -- {} {} && rm -f -- {}",
        shell_quote(from),
        shell_quote(to),
        shell_quote(from)
    )
}

/// Reads a whole file to stdout.
pub fn read_file(path: &str) -> String {
    format!("cat -- {}", shell_quote(path))
}

/// Removes a file (a staged upload left behind by a failure).
pub fn remove_file(path: &str) -> String {
    format!("rm -f -- {}", shell_quote(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(
            shell_quote("/etc/rancher/k3s/config.yaml"),
            "/etc/rancher/k3s/config.yaml"
        );
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
    }

    #[test]
    fn staging_is_beside_the_target() {
        assert_eq!(
            staging_path("/usr/local/bin/k3s", "42"),
            "/usr/local/bin/.k3s.provision-42"
        );
        assert_eq!(staging_path("/k3s", "1"), "/.k3s.provision-1");
        assert_eq!(parent_dir("/etc/x"), "/etc");
        assert_eq!(parent_dir("/x"), "/");
    }

    #[test]
    fn install_command_checks_hash_before_rename() {
        let command = verify_and_install("/etc/.a b.provision-1", "/etc/a b", "abc123", 0o600);
        assert_eq!(
            command,
            "actual=$(sha256sum -- '/etc/.a b.provision-1' | cut -d' ' -f1) && \
             if [ \"$actual\" = abc123 ]; then chmod 0600 -- '/etc/.a b.provision-1' && \
             mv -f -- '/etc/.a b.provision-1' '/etc/a b'; else rm -f -- '/etc/.a b.provision-1'; \
             echo \"$actual\"; exit 3; fi"
        );
    }

    #[test]
    fn install_command_really_works_in_sh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("out file");
        let staged = dir.path().join(".out file.provision-1");
        std::fs::write(&staged, b"hello\n").expect("write");
        // sha256 of "hello\n"
        let good = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        let run = |command: String| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .output()
                .expect("sh")
        };
        let wrong = run(verify_and_install(
            &staged.display().to_string(),
            &target.display().to_string(),
            &"0".repeat(64),
            0o640,
        ));
        assert_eq!(wrong.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&wrong.stdout).trim(), good);
        assert!(!staged.exists() && !target.exists());
        std::fs::write(&staged, b"hello\n").expect("write");
        let ok = run(verify_and_install(
            &staged.display().to_string(),
            &target.display().to_string(),
            good,
            0o640,
        ));
        assert!(ok.status.success(), "{ok:?}");
        assert_eq!(std::fs::read(&target).expect("read"), b"hello\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&target)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o640);
        }
    }

    #[test]
    fn root_wrapper_quotes_the_whole_command() {
        assert_eq!(
            as_root("echo 'x' > /etc/y"),
            r"sudo -n sh -c 'echo '\''x'\'' > /etc/y'"
        );
    }
}
