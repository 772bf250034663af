//! `provision profiles [list | show NAME]`: the built-in profiles and the workspace's own
//! `profiles/*.toml`, or one built-in profile's TOML as shipped (for users with only the binary).

use crate::cli::{ProfilesArgs, ProfilesCommand};
use crate::exit::ExitStatus;
use crate::profile::{self, BUILTIN_PROFILES, BuiltinProfile};

use super::output::{Listing, ProfileShowOutput, ProfilesOutput};
use super::{Context, UserError};

pub async fn run(context: &Context, args: ProfilesArgs) -> anyhow::Result<ExitStatus> {
    match args.command {
        None | Some(ProfilesCommand::List) => list(context),
        Some(ProfilesCommand::Docs) => {
            context.reporter.data(profile::builtin::PROFILE_REFERENCE);
            Ok(ExitStatus::Success)
        }
        Some(ProfilesCommand::Show(show)) => {
            let builtin = builtin_or_error(&show.name)?;
            context.reporter.result(&ProfileShowOutput {
                name: builtin.name.to_owned(),
                text: builtin.text.to_owned(),
            });
            Ok(ExitStatus::Success)
        }
    }
}

/// The built-in profile `name`, or a user error that lists the built-in names.
pub fn builtin_or_error(name: &str) -> Result<&'static BuiltinProfile, UserError> {
    profile::builtin::builtin(name).ok_or_else(|| {
        let names: Vec<&str> = BUILTIN_PROFILES
            .iter()
            .map(|builtin| builtin.name)
            .collect();
        UserError::new(
            format!("no built-in profile named `{name}`"),
            Some(&format!("built-in profiles: {}", names.join(", "))),
        )
    })
}

fn list(context: &Context) -> anyhow::Result<ExitStatus> {
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
