//! `provision kubeconfig [--merge]`: the workspace kubeconfig, optionally merged into `~/.kube/config`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;

use crate::k3s::kubeconfig::merge_kubeconfig_text;

/// Merge the workspace kubeconfig (one cluster/user/context named `context`) into `target`: entries named
/// `context` are replaced, every other entry is kept, `current-context` is set only when `target` has none.
/// Written atomically with mode 0600; a missing `target` is created.
pub fn merge_kubeconfig(
    workspace_kubeconfig: &Path,
    target: &Path,
    context: &str,
) -> anyhow::Result<()> {
    let source = std::fs::read_to_string(workspace_kubeconfig).with_context(|| {
        format!(
            "cannot read {} (run `provision up` first)",
            workspace_kubeconfig.display()
        )
    })?;
    if !source.contains(&format!("name: {context}")) {
        anyhow::bail!(
            "{} has no context named {context}",
            workspace_kubeconfig.display()
        );
    }
    let existing = match std::fs::read_to_string(target) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", target.display()));
        }
    };
    let merged = merge_kubeconfig_text(&existing, &source)
        .with_context(|| format!("cannot merge into {}", target.display()))?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let temporary = target.with_extension("provision-tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(merged.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, target)
        .with_context(|| format!("cannot write {}", target.display()))?;
    Ok(())
}
