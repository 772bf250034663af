//! `provision kubeconfig [--merge]`: the workspace kubeconfig, optionally merged into `~/.kube/config`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cli::KubeconfigArgs;
use crate::exit::ExitStatus;
use crate::k3s::kubeconfig::{merge_kubeconfig_text, sanitize_kubeconfig};

use super::output::KubeconfigOutput;
use super::{Context, UserError};

/// Prints the workspace kubeconfig's path (stdout); with `--merge`, merges its context first.
pub async fn run(context: &Context, args: KubeconfigArgs) -> anyhow::Result<ExitStatus> {
    // A workspace's further clusters (`--name`) have their own kubeconfig.
    let workspace = match &args.name {
        Some(name) => context.workspace.for_cluster(name)?,
        None => context.workspace.clone(),
    };
    let workspace_kubeconfig = workspace.kubeconfig_path();
    let text = match std::fs::read_to_string(&workspace_kubeconfig) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(UserError::new(
                format!("no kubeconfig yet: {} does not exist", workspace_kubeconfig.display()),
                Some("run `provision up --profile NAME` first; it writes the kubeconfig when k3s is up"),
            )
            .into());
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot read {}", workspace_kubeconfig.display()));
        }
    };
    let cluster = current_context(&text)
        .with_context(|| format!("{} has no current-context", workspace_kubeconfig.display()))?;
    let merged_into = if args.merge {
        let target = default_target()?;
        merge_kubeconfig(&workspace_kubeconfig, &target, &cluster)?;
        context.reporter.status(&format!(
            "merged context {cluster} into {} (other entries kept)",
            target.display()
        ));
        Some(target)
    } else {
        None
    };
    context.reporter.result(&KubeconfigOutput {
        kubeconfig: &workspace_kubeconfig,
        context: &cluster,
        merged_into: merged_into.as_deref(),
    });
    Ok(ExitStatus::Success)
}

/// The `current-context` of a kubeconfig (provision names it after the cluster).
fn current_context(text: &str) -> Option<String> {
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).ok()?;
    document
        .get("current-context")?
        .as_str()
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
}

/// The first file of `$KUBECONFIG`, else `~/.kube/config`.
fn default_target() -> anyhow::Result<PathBuf> {
    if let Some(list) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty())
    {
        return Ok(first);
    }
    let home = std::env::var_os("HOME").ok_or_else(|| {
        UserError::new(
            "HOME is not set: cannot find ~/.kube/config",
            Some("set KUBECONFIG to the file to merge into"),
        )
    })?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

/// Merge the workspace kubeconfig (one cluster/user/context named `context`) into `target`: entries named
/// `context` are replaced, every other entry is kept, `current-context` is set only when `target` has none.
/// Only the allow-listed fields of the workspace kubeconfig are merged (no `exec`, proxies, extra users).
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
    // Only the allow-listed fields reach the user's kubeconfig, whoever wrote the workspace file.
    let source = sanitize_kubeconfig(
        &source,
        context,
        &workspace_kubeconfig.display().to_string(),
    )?;
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
    crate::files::write_atomic(target, merged.as_bytes(), 0o600)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn merge_drops_exec_and_extra_entries_of_the_workspace_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("kubeconfig");
        // As an older provision wrote it: the guest's k3s.yaml copied whole.
        std::fs::write(
            &workspace,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://10.0.0.5:6443\n    certificate-authority-data: Q0E=\n    proxy-url: http://attacker:3128\n- name: evil\n  cluster: {server: 'https://attacker:6443'}\nusers:\n- name: lab\n  user:\n    token: abc\n    exec: {command: sh, args: [-c, id]}\n- name: evil\n  user: {token: x}\ncontexts:\n- name: lab\n  context: {cluster: lab, user: lab}\n- name: evil\n  context: {cluster: evil, user: evil}\ncurrent-context: lab\n",
        )
        .unwrap();
        let target = dir.path().join("kube/config");
        merge_kubeconfig(&workspace, &target, "lab").unwrap();
        let merged = std::fs::read_to_string(&target).unwrap();
        for forbidden in ["exec", "proxy-url", "attacker", "evil"] {
            assert!(!merged.contains(forbidden), "{forbidden}:\n{merged}");
        }
        assert!(merged.contains("https://10.0.0.5:6443"));
        assert!(merged.contains("token: abc"));
        std::fs::write(&workspace, "name: lab\nusers: [").unwrap();
        let error = merge_kubeconfig(&workspace, &target, "lab").unwrap_err();
        assert!(
            format!("{error:#}").contains("not a kubeconfig"),
            "{error:#}"
        );
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            merged,
            "target untouched"
        );
    }
}
