//! The profile a command works on, with the run's overrides (`PROVISION_SET_*`, `--set`,
//! `--name`), and the workspace scoped to that profile's cluster (each cluster of a workspace has
//! its own state, lock, secrets and kubeconfig: `workspace::clusters`).

use crate::cli::OverrideArgs;
use crate::profile::{self, LoadedProfile, Override};

use super::{Context, UserError};

/// Every override of this run, in the order they apply: the environment, `--set`, `--name`.
pub fn overrides(args: &OverrideArgs) -> Result<Vec<Override>, UserError> {
    let hint = Some("write KEY=VALUE with a dotted key path, e.g. --set cluster.ttl=2h");
    // What the user typed must not drive the terminal.
    let refused = |problem: String| UserError::new(profile::diagnostic::neutralise(&problem), hint);
    // `vars_os`: a variable that is not UTF-8 (never one of ours) must not panic the run.
    let variables = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
    let mut found = profile::overrides::from_environment(variables).map_err(refused)?;
    for text in &args.set {
        found.push(Override::parse_set(text).map_err(refused)?);
    }
    if let Some(name) = &args.name {
        found.push(Override::name(name));
    }
    Ok(found)
}

/// Loads `--profile` with the run's overrides.
pub fn load(context: &Context, spec: &str, args: &OverrideArgs) -> anyhow::Result<LoadedProfile> {
    Ok(profile::load_with(
        spec,
        &context.workspace.root,
        &overrides(args)?,
    )?)
}

/// The command's context with the workspace scoped to `loaded`'s cluster; `claim` for commands
/// that write the cluster's state (the workspace's first cluster is claimed by the first).
pub fn scoped(context: &Context, loaded: &LoadedProfile, claim: bool) -> anyhow::Result<Context> {
    let name = &loaded.profile.cluster.name;
    let workspace = if claim {
        context.workspace.claim_cluster(name)?
    } else {
        context.workspace.for_cluster(name)?
    };
    Ok(Context {
        reporter: context.reporter.clone(),
        workspace,
    })
}

/// [`load`] then [`scoped`].
pub fn load_scoped(
    context: &Context,
    spec: &str,
    args: &OverrideArgs,
    claim: bool,
) -> anyhow::Result<(LoadedProfile, Context)> {
    let loaded = load(context, spec, args)?;
    let scoped = scoped(context, &loaded, claim)?;
    Ok((loaded, scoped))
}
