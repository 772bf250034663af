//! `provision init [DIR]`: create the workspace files that are missing, keep the rest.

use anyhow::Context as _;

use crate::cli::{InitArgs, OutputFormat};
use crate::exit::ExitStatus;
use crate::workspace::{InitAction, Workspace};

use super::Context;

pub async fn run(context: &Context, args: InitArgs) -> anyhow::Result<ExitStatus> {
    let workspace = match args.dir {
        Some(dir) => Workspace::open(&dir),
        None => context.workspace.clone(),
    };
    let actions = workspace
        .init()
        .with_context(|| format!("initialising workspace {}", workspace.root.display()))?;
    let relative = |path: &std::path::Path| {
        path.strip_prefix(&workspace.root)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    match context.reporter.format() {
        OutputFormat::Json => {
            let files: Vec<serde_json::Value> = actions
                .iter()
                .map(|(path, action)| {
                    serde_json::json!({
                        "path": relative(path),
                        "action": match action {
                            InitAction::Created => "created",
                            InitAction::Kept => "kept",
                        },
                    })
                })
                .collect();
            context.reporter.json(&serde_json::json!({
                "workspace": workspace.root.display().to_string(),
                "files": files,
            }));
        }
        OutputFormat::Text => {
            for (path, action) in &actions {
                let line = match action {
                    InitAction::Created => format!("created {}", relative(path)),
                    InitAction::Kept => {
                        format!("kept    {} (already there, not changed)", relative(path))
                    }
                };
                context.reporter.status(&line);
            }
            context.reporter.status(
                "next: set PROXMOX_VE_ENDPOINT and PROXMOX_VE_API_TOKEN (or edit provision.toml), then run `provision validate --profile a100-8x`",
            );
        }
    }
    Ok(ExitStatus::Success)
}
