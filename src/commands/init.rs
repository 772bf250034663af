//! `provision init [DIR] [--profile NAME]`: create the workspace files that are missing, keep the
//! rest; with `--profile`, also a copy of the built-in profile NAME in `profiles/` to adapt.

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
    // An unknown name stops before anything is written.
    let builtin = args
        .profile
        .as_deref()
        .map(super::profiles::builtin_or_error)
        .transpose()?;
    let mut actions = workspace
        .init()
        .with_context(|| format!("initialising workspace {}", workspace.root.display()))?;
    if let Some(builtin) = builtin {
        actions.push(
            workspace
                .add_profile(builtin.name, builtin.text)
                .with_context(|| format!("writing the profile {}", builtin.name))?,
        );
    }
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
        profile: builtin.map(|builtin| builtin.name.to_owned()),
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
