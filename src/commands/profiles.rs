//! `provision profiles`: the built-in profiles and the workspace's own `profiles/*.toml`.

use crate::exit::ExitStatus;
use crate::profile::{self, BUILTIN_PROFILES};

use super::Context;
use super::output::{Listing, ProfilesOutput};

pub async fn run(context: &Context) -> anyhow::Result<ExitStatus> {
    let mut listings = Vec::new();
    let workspace_dir = context.workspace.root.join("profiles");
    let mut workspace_names = Vec::new();
    let is_workspace = context.workspace.config_path().is_file();
    if let Ok(entries) = std::fs::read_dir(&workspace_dir)
        && is_workspace
    {
        for entry in entries.flatten() {
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|extension| extension == "toml")
                && let Some(stem) = path.file_stem().and_then(|stem| stem.to_str())
            {
                workspace_names.push(stem.to_owned());
            }
        }
    }
    workspace_names.sort();
    for name in &workspace_names {
        listings.push(describe(context, name, "workspace"));
    }
    for builtin in BUILTIN_PROFILES {
        if workspace_names.iter().any(|name| name == builtin.name) {
            continue;
        }
        listings.push(describe(context, builtin.name, "builtin"));
    }
    context.reporter.result(&ProfilesOutput(listings));
    Ok(ExitStatus::Success)
}

fn describe(context: &Context, name: &str, source: &str) -> Listing {
    match profile::load(name, &context.workspace.root) {
        Ok(loaded) => Listing {
            name: name.to_owned(),
            source: source.to_owned(),
            description: loaded.profile.description.clone(),
            vms: Some(loaded.profile.vm_count()),
            gpus: Some(loaded.profile.gpu_count()),
        },
        Err(error) => Listing {
            name: name.to_owned(),
            source: source.to_owned(),
            description: format!("invalid ({error}); run `provision validate --profile {name}`"),
            vms: None,
            gpus: None,
        },
    }
}
