//! `provision init [DIR]`: create the workspace files that are missing, keep the rest.

use anyhow::Context as _;

use crate::cli::{InitArgs, OutputFormat};
use crate::exit::ExitStatus;
use crate::workspace::{InitAction, Workspace};

use super::Context;
use super::output::{InitFile, InitFileAction, InitOutput};

pub async fn run(context: &Context, args: InitArgs) -> anyhow::Result<ExitStatus> {
    let workspace = match args.dir {
        Some(dir) => Workspace::open(&dir),
        None => context.workspace.clone(),
    };
    let actions = workspace
        .init()
        .with_context(|| format!("initialising workspace {}", workspace.root.display()))?;
    let relative = |path: &std::path::Path| {
        let shown = path.strip_prefix(&workspace.root).unwrap_or(path);
        if path.is_dir() {
            format!("{}/", shown.display())
        } else {
            shown.display().to_string()
        }
    };
    let output = InitOutput {
        workspace: workspace.root.display().to_string(),
        files: actions
            .iter()
            .map(|(path, action)| InitFile {
                path: relative(path),
                action: match action {
                    InitAction::Created => InitFileAction::Created,
                    InitAction::Kept => InitFileAction::Kept,
                },
            })
            .collect(),
    };
    match context.reporter.format() {
        OutputFormat::Json => context.reporter.json(&output),
        OutputFormat::Text => {
            for line in output.text_lines() {
                context.reporter.status(&line);
            }
        }
    }
    Ok(ExitStatus::Success)
}
