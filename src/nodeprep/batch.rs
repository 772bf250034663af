//! Several steps in one remote script: one SSH round trip per host instead of one (or four, for a file)
//! per step. Each command step runs in its own `sh -c`, exactly as alone; small files travel on the
//! script's stdin (never on its command line, where `ps` would show them: the k3s config holds the
//! cluster token) and are installed only when their sha256 or mode differs, verified like an upload.
//! Execution stops at the first failing step, as with one step at a time.

use super::shell::quote;
use super::{OUTCOME_MARKER, Step, sha256_hex};

/// Files up to this size travel inside the batch script; bigger ones go through the executor's upload.
pub const INLINE_FILE_MAX: usize = 16 * 1024;
/// Upper bound on one batch script (one `sh -c` argument: Linux allows 128 KiB, sudo quoting adds some).
pub const BATCH_SCRIPT_MAX: usize = 64 * 1024;
/// Upper bound on the file contents one batch carries on stdin.
pub const BATCH_STDIN_MAX: usize = 256 * 1024;

/// A batch ready to send: the script (the command line) and the file contents it reads from stdin.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    pub script: String,
    /// The contents of the batch's files, concatenated in step order; each file step reads exactly its
    /// own length, whether it installs the file or finds it unchanged.
    pub stdin: Vec<u8>,
}

impl std::fmt::Debug for Batch {
    // The stdin carries file contents, which may be secrets: show only its length.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("script", &self.script)
            .field("stdin_bytes", &self.stdin.len())
            .finish()
    }
}

/// Whether a step can go into a batch (and how big its part of the script is).
pub fn batchable(step: &Step) -> bool {
    match step {
        Step::Command { .. } => step_script(step, 0, "x").len() <= BATCH_SCRIPT_MAX / 2,
        Step::File { content, .. } => content.len() <= INLINE_FILE_MAX,
    }
}

/// The part of the batch script that runs step `index`: begin marker, the step with stdin closed and
/// stderr kept aside, end marker with its exit status; a failure prints its stderr and ends the batch.
fn step_script(step: &Step, index: usize, nonce: &str) -> String {
    let body = match step {
        Step::Command { script, .. } => format!("sh -c {} </dev/null", quote(script)),
        Step::File {
            path,
            content,
            mode,
            ..
        } => inline_file_script(path, content, *mode),
    };
    format!(
        "echo 'provision-batch-{nonce}: begin {index}'\n( {body}\n) 2>\"$errs\"; rc=$?\n\
         echo \"provision-batch-{nonce}: end {index} $rc\"\n\
         if [ $rc -ne 0 ]; then cat \"$errs\" >&2; rm -f \"$errs\"; exit $rc; fi\n"
    )
}

/// Installs the next `content.len()` bytes of stdin at `path` with `mode` unless identical; a corrupted
/// transfer exits 3. The bytes are consumed in both cases, so the next file step reads its own.
fn inline_file_script(path: &str, content: &[u8], mode: u32) -> String {
    let path_q = quote(path);
    let parent = std::path::Path::new(path)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    let name = path.rsplit('/').next().unwrap_or(path);
    let staged = quote(&format!(
        "{}/.{name}.provision-batch",
        parent.trim_end_matches('/')
    ));
    let sha = sha256_hex(content);
    let mode = mode & 0o7777;
    let len = content.len();
    format!(
        "set -eu\n\
         if [ -f {path_q} ] && [ \"$(stat -c %a -- {path_q})\" = {mode:o} ] && \
         [ \"$(sha256sum < {path_q} | cut -d' ' -f1)\" = {sha} ]; then head -c {len} >/dev/null; echo '{OUTCOME_MARKER} unchanged'; exit 0; fi\n\
         mkdir -p -- {parent_q}\n\
         (umask 077; head -c {len} > {staged})\n\
         actual=\"$(sha256sum < {staged} | cut -d' ' -f1)\"\n\
         if [ \"$actual\" != {sha} ]; then rm -f -- {staged}; printf '%s arrived with sha256 %s, expected {sha}\\n' {path_q} \"$actual\" >&2; exit 3; fi\n\
         chmod {mode:04o} -- {staged}\n\
         mv -f -- {staged} {path_q}\n\
         echo '{OUTCOME_MARKER} changed'",
        parent_q = quote(&parent),
    )
}

/// One script running `steps` in order (all must be [`batchable`]), and the stdin it reads the file
/// contents from; `nonce` makes its markers unique.
pub fn batch_script(steps: &[Step], nonce: &str) -> Batch {
    let mut script = String::from("errs=\"$(mktemp)\" || exit 70\ntrap 'rm -f \"$errs\"' EXIT\n");
    let mut stdin = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        script.push_str(&step_script(step, index, nonce));
        if let Step::File { content, .. } = step {
            stdin.extend_from_slice(content);
        }
    }
    Batch { script, stdin }
}

/// What one step of a batch printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult {
    pub stdout: String,
    pub exit_status: i32,
}

/// Splits a batch's stdout into per-step results, in order; steps that did not run are absent.
pub fn parse_batch(stdout: &str, nonce: &str) -> Vec<StepResult> {
    let marker = format!("provision-batch-{nonce}: ");
    let mut results = Vec::new();
    let mut current: Option<String> = None;
    for line in stdout.lines() {
        match line.strip_prefix(&marker) {
            Some(rest) if rest.starts_with("begin ") => current = Some(String::new()),
            Some(rest) if rest.starts_with("end ") => {
                let status = rest
                    .split_whitespace()
                    .nth(2)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(-1);
                results.push(StepResult {
                    stdout: current.take().unwrap_or_default(),
                    exit_status: status,
                });
            }
            _ => {
                if let Some(out) = current.as_mut() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    results
}

/// Groups `steps` into runs to execute together: consecutive batchable steps whose script stays under
/// [`BATCH_SCRIPT_MAX`]; a step that cannot be batched is a group of its own (`false`).
pub fn plan_batches(steps: &[Step]) -> Vec<(bool, std::ops::Range<usize>)> {
    let mut groups: Vec<(bool, std::ops::Range<usize>)> = Vec::new();
    let (mut size, mut stdin) = (0, 0);
    for (index, step) in steps.iter().enumerate() {
        if !batchable(step) {
            groups.push((false, index..index + 1));
            continue;
        }
        let step_size = step_script(step, index, "0123456789abcdef").len();
        let step_stdin = match step {
            Step::File { content, .. } => content.len(),
            Step::Command { .. } => 0,
        };
        match groups.last_mut() {
            Some((true, range))
                if size + step_size <= BATCH_SCRIPT_MAX
                    && stdin + step_stdin <= BATCH_STDIN_MAX =>
            {
                range.end = index + 1;
                size += step_size;
                stdin += step_stdin;
            }
            _ => {
                groups.push((true, index..index + 1));
                size = step_size;
                stdin = step_stdin;
            }
        }
    }
    groups
}

/// Reads back the steps of a script made by [`batch_script`]: its nonce and each step with an empty
/// description, or `None` when `script` is not a batch script or `stdin` does not hold exactly its files'
/// contents. The inverse of [`batch_script`], for in-memory hosts in tests and for `--print-commands`
/// style inspection; it never runs anything.
pub fn decode_batch(script: &str, stdin: &[u8]) -> Option<(String, Vec<Step>)> {
    let mut stdin = stdin;
    let mut rest =
        script.strip_prefix("errs=\"$(mktemp)\" || exit 70\ntrap 'rm -f \"$errs\"' EXIT\n")?;
    let mut nonce: Option<String> = None;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        let after_echo = rest.strip_prefix("echo 'provision-batch-")?;
        let (found, after_nonce) = after_echo.split_once(": begin ")?;
        match &nonce {
            Some(known) if known != found => return None,
            Some(_) => {}
            None => nonce = Some(found.to_owned()),
        }
        let (index, body) = after_nonce.split_once("'\n( ")?;
        if index.parse::<usize>().ok()? != steps.len() {
            return None;
        }
        let (step, after_body) = if let Some(command) = body.strip_prefix("sh -c ") {
            let (script, after) = unquote_word(command)?;
            let after = after.strip_prefix(" </dev/null")?;
            (
                Step::Command {
                    description: String::new(),
                    script,
                },
                after,
            )
        } else {
            let (len, path, mode, after) = decode_inline_file(body)?;
            if stdin.len() < len {
                return None;
            }
            let (content, remaining) = stdin.split_at(len);
            stdin = remaining;
            let step = Step::File {
                description: String::new(),
                path,
                content: content.to_vec(),
                mode,
            };
            (step, after)
        };
        let tail = format!(
            "\n) 2>\"$errs\"; rc=$?\necho \"provision-batch-{found}: end {index} $rc\"\n\
             if [ $rc -ne 0 ]; then cat \"$errs\" >&2; rm -f \"$errs\"; exit $rc; fi\n"
        );
        rest = after_body.strip_prefix(tail.as_str())?;
        steps.push(step);
    }
    stdin.is_empty().then_some(())?;
    Some((nonce?, steps))
}

/// The file step of [`inline_file_script`]: its length on stdin, path, mode, and the text after it.
fn decode_inline_file(body: &str) -> Option<(usize, String, u32, &str)> {
    let (path, _) = unquote_word(body.strip_prefix("set -eu\nif [ -f ")?)?;
    let (_, after_head) = body.split_once("\n(umask 077; head -c ")?;
    let (len, _) = after_head.split_once(' ')?;
    let len = len.parse().ok()?;
    let (_, after_chmod) = after_head.split_once("\nchmod ")?;
    let (mode, _) = after_chmod.split_once(' ')?;
    let mode = u32::from_str_radix(mode, 8).ok()?;
    let end = format!("\necho '{OUTCOME_MARKER} changed'");
    let (_, after) = after_chmod.split_once(end.as_str())?;
    Some((len, path, mode, after))
}

/// The first shell word of `text` as [`quote`] writes it (bare, or single-quoted with `'\''` escapes),
/// and what follows it.
fn unquote_word(text: &str) -> Option<(String, &str)> {
    let Some(mut rest) = text.strip_prefix('\'') else {
        let end = text.find([' ', '\n']).unwrap_or(text.len());
        return (end > 0).then(|| (text[..end].to_owned(), &text[end..]));
    };
    let mut word = String::new();
    loop {
        let (chunk, after) = rest.split_once('\'')?;
        word.push_str(chunk);
        match after.strip_prefix("\\''") {
            Some(continued) => {
                word.push('\'');
                rest = continued;
            }
            None => return Some((word, after)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn command(script: &str) -> Step {
        Step::Command {
            description: script.to_owned(),
            script: script.to_owned(),
        }
    }

    fn file(path: &str, bytes: usize) -> Step {
        Step::File {
            description: path.to_owned(),
            path: path.to_owned(),
            content: vec![b'x'; bytes],
            mode: 0o644,
        }
    }

    fn run_locally(batch: &Batch) -> (i32, String, String) {
        use std::io::Write as _;
        let mut child = std::process::Command::new("sh")
            .args(["-c", &batch.script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // The script may stop early without reading everything (a failing step).
        let _ignored = stdin.write_all(&batch.stdin);
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        (
            output.status.code().unwrap(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    }

    #[test]
    fn file_contents_travel_on_stdin_never_on_the_command_line() {
        use base64::Engine as _;
        let secret = b"token: \"s3cr3t-cluster-token\"\n";
        let steps = [
            Step::File {
                description: "config".into(),
                path: "/etc/rancher/k3s/config.yaml".into(),
                content: secret.to_vec(),
                mode: 0o600,
            },
            command("true"),
        ];
        let batch = batch_script(&steps, "n0");
        let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
        assert!(!batch.script.contains("s3cr3t"), "{}", batch.script);
        assert!(!batch.script.contains(&encoded), "{}", batch.script);
        assert_eq!(batch.stdin, secret);
        assert!(!format!("{batch:?}").contains("s3cr3t"));
    }

    #[test]
    fn unchanged_files_still_consume_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first").display().to_string();
        let second = dir.path().join("second").display().to_string();
        let steps = [
            Step::File {
                description: "1".into(),
                path: first.clone(),
                content: b"one\n".to_vec(),
                mode: 0o644,
            },
            Step::File {
                description: "2".into(),
                path: second.clone(),
                content: b"two\n".to_vec(),
                mode: 0o644,
            },
        ];
        let batch = batch_script(&steps, "n5");
        assert_eq!(run_locally(&batch).0, 0);
        std::fs::remove_file(&second).unwrap();
        let (status, stdout, stderr) = run_locally(&batch);
        assert_eq!(status, 0, "{stderr}");
        let results = parse_batch(&stdout, "n5");
        assert!(results[0].stdout.contains("unchanged"));
        assert!(results[1].stdout.contains("provision-outcome: changed"));
        assert_eq!(std::fs::read(&second).unwrap(), b"two\n");
    }

    #[test]
    fn steps_run_in_order_and_stop_at_the_first_failure() {
        let steps = [
            command("echo one; echo 'provision-outcome: changed'"),
            command("echo oops >&2; echo 'it'\\''s'; exit 4"),
            command("echo never"),
        ];
        let (status, stdout, stderr) = run_locally(&batch_script(&steps, "n1"));
        assert_eq!(status, 4);
        assert_eq!(stderr, "oops\n");
        let results = parse_batch(&stdout, "n1");
        assert_eq!(
            results,
            [
                StepResult {
                    stdout: "one\nprovision-outcome: changed\n".into(),
                    exit_status: 0
                },
                StepResult {
                    stdout: "it's\n".into(),
                    exit_status: 4
                },
            ]
        );
        assert!(!stdout.contains("never"));
    }

    #[test]
    fn inline_file_is_written_once_with_mode_and_verified() {
        let dir = std::env::temp_dir().join(format!("provision-batch-{}", std::process::id()));
        let path = dir.join("sub/it's.conf").display().to_string();
        let step = Step::File {
            description: "f".into(),
            path: path.clone(),
            content: b"a = 1\n\x00binary\n".to_vec(),
            mode: 0o640,
        };
        let script = batch_script(std::slice::from_ref(&step), "n2");
        let (status, stdout, _) = run_locally(&script);
        assert_eq!(status, 0);
        assert!(parse_batch(&stdout, "n2")[0].stdout.contains("changed"));
        assert_eq!(std::fs::read(&path).unwrap(), b"a = 1\n\x00binary\n");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        let (_, stdout, _) = run_locally(&script);
        assert!(parse_batch(&stdout, "n2")[0].stdout.contains("unchanged"));
        // A changed mode alone is a change.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (_, stdout, _) = run_locally(&script);
        assert!(
            parse_batch(&stdout, "n2")[0]
                .stdout
                .contains("provision-outcome: changed")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn big_files_and_huge_scripts_are_not_batched() {
        let steps = [
            command("true"),
            file("/a", 100),
            file("/big", INLINE_FILE_MAX + 1),
            command("true"),
        ];
        assert_eq!(
            plan_batches(&steps),
            [(true, 0..2), (false, 2..3), (true, 3..4)]
        );
        // File contents travel on stdin: they do not count against the command line.
        let many: Vec<Step> = (0..8).map(|_| file("/f", INLINE_FILE_MAX)).collect();
        assert_eq!(plan_batches(&many), [(true, 0..8)]);
        let per_batch = BATCH_STDIN_MAX / INLINE_FILE_MAX;
        let more: Vec<Step> = (0..per_batch + 1)
            .map(|_| file("/f", INLINE_FILE_MAX))
            .collect();
        assert_eq!(
            plan_batches(&more),
            [(true, 0..per_batch), (true, per_batch..per_batch + 1)]
        );
        let long = "x".repeat(BATCH_SCRIPT_MAX / 3);
        let scripts: Vec<Step> = (0..4).map(|_| command(&long)).collect();
        let groups = plan_batches(&scripts);
        assert!(groups.len() > 1, "{groups:?}");
        assert!(groups.iter().all(|(batched, _)| *batched));
    }

    #[test]
    fn decode_batch_reads_back_every_step() {
        let steps = [
            command("echo 'it'\\''s' \"$x\"\nprintf '%s\\n' done"),
            Step::File {
                description: String::new(),
                path: "/etc/it's dir/a.conf".into(),
                content: b"a = 1\n\x00binary\n".to_vec(),
                mode: 0o640,
            },
            command("true"),
            file("/etc/plain", 3),
        ];
        let batch = batch_script(&steps, "abc123");
        let (nonce, decoded) = decode_batch(&batch.script, &batch.stdin).unwrap();
        assert_eq!(nonce, "abc123");
        let expected: Vec<Step> = steps
            .iter()
            .map(|step| match step.clone() {
                Step::Command { script, .. } => Step::Command {
                    description: String::new(),
                    script,
                },
                Step::File {
                    path,
                    content,
                    mode,
                    ..
                } => Step::File {
                    description: String::new(),
                    path,
                    content,
                    mode,
                },
            })
            .collect();
        assert_eq!(decoded, expected);
        assert_eq!(decode_batch("echo hello", b""), None);
        let batch = batch_script(&steps, "n");
        assert_eq!(decode_batch(&batch.script[..200], &batch.stdin), None);
        assert_eq!(decode_batch(&batch.script, &batch.stdin[1..]), None);
        assert_eq!(decode_batch(&batch.script, b"extra"), None);
    }
}
