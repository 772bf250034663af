//! Node preparation as pure builders of remote commands and files: swap, modules, sysctls, scratch disk, packages, hardware labels.
//!
//! Every builder returns [`Step`]s; [`apply_step`] runs one through a [`RemoteExec`] and says whether it
//! changed the host. Command scripts end with one `provision-outcome:` line (see [`parse_outcome`]) so the
//! decision "changed or not" is made on the host, in the same round trip as the change itself.

pub mod batch;
pub mod hardware;
pub mod nvidia;
pub mod shell;
pub mod steps;

use sha2::{Digest, Sha256};

use crate::ssh::{RemoteExec, SshError};

pub use hardware::{Hardware, hardware_probe_script, node_labels, parse_hardware};
pub use steps::{NodePrepInput, ScratchDisk, prepare_steps};

/// Marker that starts the last line of every command script.
pub const OUTCOME_MARKER: &str = "provision-outcome:";

/// One unit of remote work.
#[derive(Clone, PartialEq, Eq)]
pub enum Step {
    /// A script run with `sh -c`; it must be idempotent and print an outcome line.
    Command { description: String, script: String },
    /// A whole file; written only when its sha256 or mode differs from what is on the host.
    File {
        description: String,
        path: String,
        content: Vec<u8>,
        mode: u32,
    },
}

impl std::fmt::Debug for Step {
    // File contents may hold secrets (the k3s token): show their digest, never the bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Command {
                description,
                script,
            } => f
                .debug_struct("Command")
                .field("description", description)
                .field("script", script)
                .finish(),
            Step::File {
                description,
                path,
                content,
                mode,
            } => f
                .debug_struct("File")
                .field("description", description)
                .field("path", path)
                .field("sha256", &sha256_hex(content))
                .field("mode", &format_args!("{mode:04o}"))
                .finish(),
        }
    }
}

impl Step {
    pub fn description(&self) -> &str {
        match self {
            Step::Command { description, .. } | Step::File { description, .. } => description,
        }
    }

    /// What `--print-commands` shows: the exact script, or the file write with its digest and mode.
    pub fn display_command(&self) -> String {
        match self {
            Step::Command { script, .. } => script.clone(),
            Step::File {
                path,
                content,
                mode,
                ..
            } => format!(
                "# write {path} (mode {mode:04o}, {} bytes, sha256 {}) unless identical\n{}",
                content.len(),
                sha256_hex(content),
                file_state_script(path)
            ),
        }
    }
}

/// What a step did on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Changed,
    Unchanged,
    /// A kernel module that is compiled into the kernel: nothing to load, nothing wrong.
    BuiltIn(String),
    /// The host cannot do this (a container cannot load modules, a sysctl is denied or absent).
    /// Not a success and not fatal: reported so the operator knows.
    Unsupported(String),
}

impl StepOutcome {
    pub fn is_change(&self) -> bool {
        matches!(self, StepOutcome::Changed)
    }
}

impl std::fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepOutcome::Changed => f.write_str("changed"),
            StepOutcome::Unchanged => f.write_str("unchanged"),
            StepOutcome::BuiltIn(detail) => write!(f, "built in ({detail})"),
            StepOutcome::Unsupported(reason) => write!(f, "unsupported ({reason})"),
        }
    }
}

/// A step and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    pub description: String,
    pub outcome: StepOutcome,
}

#[derive(Debug, thiserror::Error)]
pub enum NodePrepError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{host}: {description} failed with exit status {status}: {stderr}")]
    StepFailed {
        host: String,
        description: String,
        status: u32,
        stderr: String,
    },
    #[error("{host}: {description} printed no `{OUTCOME_MARKER}` line (stdout: {stdout})")]
    NoOutcome {
        host: String,
        description: String,
        stdout: String,
    },
    #[error("{host}: cannot read the state of {path}: {output}")]
    FileState {
        host: String,
        path: String,
        output: String,
    },
}

/// A failed node preparation step is a failure of the node (exit 2); SSH errors keep their own.
impl crate::error::UserFacing for NodePrepError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            NodePrepError::Ssh(error) => crate::error::UserFacing::exit_status(error),
            NodePrepError::StepFailed { .. }
            | NodePrepError::NoOutcome { .. }
            | NodePrepError::FileState { .. } => crate::exit::ExitStatus::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            NodePrepError::Ssh(error) => crate::error::UserFacing::hint(error),
            NodePrepError::StepFailed { .. }
            | NodePrepError::NoOutcome { .. }
            | NodePrepError::FileState { .. } => None,
        }
    }
}

/// Parse the last `provision-outcome:` line of a script's stdout.
pub fn parse_outcome(stdout: &str) -> Option<StepOutcome> {
    let line = stdout
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix(OUTCOME_MARKER))?
        .trim();
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim().to_owned();
    match word {
        "changed" => Some(StepOutcome::Changed),
        "unchanged" => Some(StepOutcome::Unchanged),
        "builtin" => Some(StepOutcome::BuiltIn(rest)),
        "unsupported" => Some(StepOutcome::Unsupported(rest)),
        _ => None,
    }
}

/// Lowercase hex sha256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// What a file looks like on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Absent,
    Present { mode: u32, sha256: String },
}

/// Script printing `present <octal mode> <sha256>` or `absent` (creating the parent directory then,
/// so the write that follows can land).
pub fn file_state_script(path: &str) -> String {
    let path_q = shell::quote(path);
    let parent = std::path::Path::new(path)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    format!(
        "if [ -f {path_q} ]; then printf 'present %s %s\\n' \"$(stat -c %a {path_q})\" \"$(sha256sum < {path_q} | cut -d' ' -f1)\"; else mkdir -p {parent}; echo absent; fi",
        parent = shell::quote(&parent)
    )
}

/// Parse [`file_state_script`]'s output.
pub fn parse_file_state(stdout: &str) -> Option<FileState> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    if line == "absent" {
        return Some(FileState::Absent);
    }
    let mut words = line.split_whitespace();
    if words.next()? != "present" {
        return None;
    }
    let mode = u32::from_str_radix(words.next()?, 8).ok()?;
    let sha256 = words.next()?.to_ascii_lowercase();
    (sha256.len() == 64).then_some(FileState::Present { mode, sha256 })
}

/// Whether a file needs writing: only when absent, different content, or different mode.
pub fn file_needs_write(state: &FileState, content: &[u8], mode: u32) -> bool {
    match state {
        FileState::Absent => true,
        FileState::Present {
            mode: have_mode,
            sha256,
        } => *have_mode != (mode & 0o7777) || *sha256 != sha256_hex(content),
    }
}

/// Run one step on a host.
pub async fn apply_step(exec: &dyn RemoteExec, step: &Step) -> Result<StepOutcome, NodePrepError> {
    match step {
        Step::Command {
            description,
            script,
        } => {
            let output = exec.run(script, None).await?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            if output.exit_status != 0 {
                return Err(NodePrepError::StepFailed {
                    host: exec.host().to_owned(),
                    description: description.clone(),
                    status: output.exit_status,
                    stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                });
            }
            parse_outcome(&stdout).ok_or_else(|| NodePrepError::NoOutcome {
                host: exec.host().to_owned(),
                description: description.clone(),
                stdout: stdout.trim().to_owned(),
            })
        }
        Step::File {
            path,
            content,
            mode,
            ..
        } => ensure_file(exec, path, content, *mode).await,
    }
}

/// Write `content` to `path` with `mode` unless the host already has exactly that (sha256 and mode).
pub async fn ensure_file(
    exec: &dyn RemoteExec,
    path: &str,
    content: &[u8],
    mode: u32,
) -> Result<StepOutcome, NodePrepError> {
    let output = exec.run(&file_state_script(path), None).await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let state = parse_file_state(&stdout)
        .filter(|_| output.exit_status == 0)
        .ok_or_else(|| NodePrepError::FileState {
            host: exec.host().to_owned(),
            path: path.to_owned(),
            output: format!(
                "{} {}",
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })?;
    if file_needs_write(&state, content, mode) {
        exec.write_file(path, content, mode).await?;
        Ok(StepOutcome::Changed)
    } else {
        Ok(StepOutcome::Unchanged)
    }
}

/// Run steps in order, stopping at the first failure. Consecutive small steps go to the host as one
/// script (see [`batch`]): one round trip for the whole node preparation instead of one per step.
pub async fn apply_steps(
    exec: &dyn RemoteExec,
    steps: &[Step],
) -> Result<Vec<StepReport>, NodePrepError> {
    let mut reports = Vec::with_capacity(steps.len());
    for (batched, range) in batch::plan_batches(steps) {
        let group = &steps[range];
        if batched && group.len() > 1 {
            reports.extend(apply_batch(exec, group).await?);
        } else {
            for step in group {
                let outcome = apply_step(exec, step).await?;
                reports.push(StepReport {
                    description: step.description().to_owned(),
                    outcome,
                });
            }
        }
    }
    Ok(reports)
}

/// Runs batchable `steps` as one remote script and reports each as [`apply_step`] would.
async fn apply_batch(
    exec: &dyn RemoteExec,
    steps: &[Step],
) -> Result<Vec<StepReport>, NodePrepError> {
    let nonce = format!("{:016x}", rand::random::<u64>());
    let batch = batch::batch_script(steps, &nonce);
    let stdin = (!batch.stdin.is_empty()).then_some(batch.stdin.as_slice());
    let output = exec.run(&batch.script, stdin).await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let results = batch::parse_batch(&stdout, &nonce);
    let mut reports = Vec::with_capacity(steps.len());
    for (index, step) in steps.iter().enumerate() {
        let description = step.description().to_owned();
        let Some(result) = results.get(index).filter(|r| r.exit_status == 0) else {
            // This step failed, or the batch ended before it (its stderr says why).
            return Err(NodePrepError::StepFailed {
                host: exec.host().to_owned(),
                description,
                status: results
                    .get(index)
                    .and_then(|r| u32::try_from(r.exit_status).ok())
                    .unwrap_or(output.exit_status),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        };
        let outcome = parse_outcome(&result.stdout).ok_or_else(|| NodePrepError::NoOutcome {
            host: exec.host().to_owned(),
            description: description.clone(),
            stdout: result.stdout.trim().to_owned(),
        })?;
        reports.push(StepReport {
            description,
            outcome,
        });
    }
    Ok(reports)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn outcome_line_is_parsed_from_the_end() {
        assert_eq!(
            parse_outcome("noise\nprovision-outcome: changed\n"),
            Some(StepOutcome::Changed)
        );
        assert_eq!(
            parse_outcome("provision-outcome: builtin overlay is compiled in"),
            Some(StepOutcome::BuiltIn("overlay is compiled in".into()))
        );
        assert_eq!(
            parse_outcome("provision-outcome: unsupported container (lxc)\n"),
            Some(StepOutcome::Unsupported("container (lxc)".into()))
        );
        assert_eq!(parse_outcome("changed"), None);
        assert_eq!(parse_outcome("provision-outcome: maybe"), None);
    }

    #[test]
    fn file_state_round_trip_and_decision() {
        let content = b"overlay\n";
        let sha = sha256_hex(content);
        let state = parse_file_state(&format!("present 644 {sha}\n")).unwrap();
        assert_eq!(
            state,
            FileState::Present {
                mode: 0o644,
                sha256: sha.clone()
            }
        );
        assert!(!file_needs_write(&state, content, 0o644));
        assert!(file_needs_write(&state, content, 0o600));
        assert!(file_needs_write(&state, b"other", 0o644));
        assert!(file_needs_write(&FileState::Absent, content, 0o644));
        assert_eq!(parse_file_state("absent"), Some(FileState::Absent));
        assert_eq!(parse_file_state("present 644 short"), None);
        assert_eq!(parse_file_state("garbage"), None);
    }

    #[test]
    fn file_state_script_quotes_and_creates_parent() {
        let script = file_state_script("/etc/rancher/k3s/config.yaml");
        assert!(script.contains("mkdir -p /etc/rancher/k3s;"));
        assert!(script.contains("stat -c %a /etc/rancher/k3s/config.yaml"));
    }

    #[test]
    fn debug_never_shows_file_bytes() {
        let step = Step::File {
            description: "token".into(),
            path: "/x".into(),
            content: b"secret-token".to_vec(),
            mode: 0o600,
        };
        let shown = format!("{step:?}");
        assert!(!shown.contains("secret-token"));
        assert!(shown.contains("0600"));
    }
}
