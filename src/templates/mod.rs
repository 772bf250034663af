//! The one home of provision's minijinja templates: the built-ins under `templates/` (cloud-init,
//! k3s, manifests, systemd), embedded at compile time, each replaceable by a file at the same
//! relative path in a workspace's override directory (`<workspace>/templates/`).
//!
//! [`Sources`] says where each template's text comes from; [`environment`] builds the one
//! minijinja environment every renderer uses, with the escaping of its [`Dialect`]. An override is
//! escaped exactly like the built-in it replaces, and its callers validate what it renders the same
//! way (the user-data, network-config and meta-data are YAML mappings, manifests parse as YAML).

pub(crate) mod escape;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

/// The override directory, relative to the workspace: `<workspace>/templates/<name>` replaces the
/// built-in template `<name>` (for example `cloud-init/user-data.yaml.j2`).
pub const OVERRIDE_DIR: &str = "templates";

/// `(name, text)` of the built-in template `templates/<name>`.
macro_rules! builtin {
    ($name:literal) => {
        ($name, include_str!(concat!("../../templates/", $name)))
    };
}

/// Every built-in template, by its path under `templates/`.
pub const BUILTIN: &[(&str, &str)] = &[
    builtin!("cloud-init/user-data.yaml.j2"),
    builtin!("cloud-init/network-config.yaml.j2"),
    builtin!("cloud-init/meta-data.yaml.j2"),
    builtin!("k3s/config.yaml.j2"),
    builtin!("systemd/k3s.service.j2"),
    builtin!("systemd/k3s-agent.service.j2"),
    builtin!("manifests/kube-vip.yaml.j2"),
    builtin!("manifests/nvidia-gpu-operator.yaml.j2"),
    builtin!("manifests/nvidia-runtimeclass.yaml.j2"),
    builtin!("manifests/nfs-provisioner.yaml.j2"),
    builtin!("manifests/local-path-provisioner.yaml.j2"),
    builtin!("manifests/flux.yaml.j2"),
    builtin!("manifests/flux-sync.yaml.j2"),
    builtin!("manifests/argocd.yaml.j2"),
    builtin!("manifests/argocd-root.yaml.j2"),
    builtin!("manifests/fleet.yaml.j2"),
    builtin!("manifests/fleet-gitrepo.yaml.j2"),
];

/// Why a template could not be loaded or compiled. Each layer maps it into its own error enum.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// An override file exists but cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Neither an override nor a built-in of that name.
    #[error("no template {name}")]
    Unknown { name: String },
    /// The template does not compile; `label` is the override file, or the built-in's name.
    #[error("{label}: {source:#}")]
    Syntax {
        label: String,
        #[source]
        source: minijinja::Error,
    },
}

/// One template's text and where it came from.
#[derive(Debug)]
pub struct Source {
    pub text: Cow<'static, str>,
    /// The override file, or `None` for the built-in.
    pub override_path: Option<PathBuf>,
}

impl Source {
    /// What errors call the template: the override file, or the built-in's name.
    pub fn label(&self, name: &str) -> String {
        match &self.override_path {
            Some(path) => path.display().to_string(),
            None => name.to_owned(),
        }
    }
}

/// Where templates come from: the built-ins, each replaced by `<override dir>/<name>` when that
/// file exists.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    override_dir: Option<PathBuf>,
}

impl Sources {
    /// Built-in templates only.
    pub fn builtin() -> Self {
        Self { override_dir: None }
    }

    /// Built-ins, each replaced by `<dir>/<name>` when that file exists (`dir` is usually
    /// `<workspace>/templates`, see [`OVERRIDE_DIR`]).
    pub fn with_overrides(dir: &Path) -> Self {
        Self {
            override_dir: Some(dir.to_path_buf()),
        }
    }

    /// The text of template `name` (a path under `templates/`, like `k3s/config.yaml.j2`).
    pub fn load(&self, name: &str) -> Result<Source, TemplateError> {
        if let Some(dir) = &self.override_dir {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    return Ok(Source {
                        text: Cow::Owned(text),
                        override_path: Some(path),
                    });
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(TemplateError::Io { path, source }),
            }
        }
        BUILTIN
            .iter()
            .find(|(builtin, _)| *builtin == name)
            .map(|(_, text)| Source {
                text: Cow::Borrowed(*text),
                override_path: None,
            })
            .ok_or_else(|| TemplateError::Unknown {
                name: name.to_owned(),
            })
    }

    /// Load `name` and compile it into `environment`; returns the label errors should use.
    pub fn add_to(
        &self,
        environment: &mut Environment<'static>,
        name: &str,
    ) -> Result<String, TemplateError> {
        let source = self.load(name)?;
        let label = source.label(name);
        environment
            .add_template_owned(name.to_owned(), source.text.into_owned())
            .map_err(|source| TemplateError::Syntax {
                label: label.clone(),
                source,
            })?;
        Ok(label)
    }
}

/// The two families of templates, which differ in whitespace handling and in how values are
/// quoted. The built-ins are written for theirs; an override inherits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `cloud-init/*`: block tags trim their line (`trim_blocks`, `lstrip_blocks`); every value is a
    /// double-quoted YAML flow node with non-ASCII escaped ([`escape::yaml_scalar`]), also through
    /// the `yaml` filter.
    CloudInit,
    /// `k3s/*`, `manifests/*`, `systemd/*`: whitespace as written; in `*.yaml.j2` every value is a
    /// JSON literal that YAML reads back unchanged ([`escape::json_scalar`], also the `tojson` and
    /// `yaml` filters); in `*.service.j2` a value must be one plain word.
    Cluster,
}

/// The minijinja environment for templates of `dialect`: strict undefined variables, trailing
/// newline kept, and values escaped by the file's kind whether or not the template asks.
pub fn environment(dialect: Dialect) -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_keep_trailing_newline(true);
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    environment.set_formatter(escape::format_value);
    match dialect {
        Dialect::CloudInit => {
            environment.set_trim_blocks(true);
            environment.set_lstrip_blocks(true);
            environment.set_auto_escape_callback(|_| escape::YAML_ESCAPE);
            environment.add_filter("yaml", escape::yaml_filter);
        }
        Dialect::Cluster => {
            environment.set_auto_escape_callback(cluster_escape);
            environment.add_filter("tojson", escape::json_filter);
            environment.add_filter("yaml", escape::json_filter);
        }
    }
    environment
}

/// How a [`Dialect::Cluster`] template's values are escaped, by its file name.
fn cluster_escape(name: &str) -> AutoEscape {
    if name.ends_with(".yaml.j2") || name.ends_with(".yml.j2") {
        escape::JSON_YAML_ESCAPE
    } else if name.ends_with(".service.j2") {
        escape::SYSTEMD_ESCAPE
    } else {
        AutoEscape::None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_builtin_compiles_in_its_dialect() {
        for (name, _) in BUILTIN {
            let dialect = if name.starts_with("cloud-init/") {
                Dialect::CloudInit
            } else {
                Dialect::Cluster
            };
            let mut environment = environment(dialect);
            let label = Sources::builtin().add_to(&mut environment, name).unwrap();
            assert_eq!(label, *name);
        }
    }

    #[test]
    fn override_wins_and_is_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cloud-init")).unwrap();
        let path = dir.path().join("cloud-init/meta-data.yaml.j2");
        std::fs::write(&path, "{% if %}").unwrap();
        let sources = Sources::with_overrides(dir.path());
        let source = sources.load("cloud-init/meta-data.yaml.j2").unwrap();
        assert_eq!(source.override_path.as_deref(), Some(path.as_path()));
        let error = sources
            .add_to(
                &mut environment(Dialect::CloudInit),
                "cloud-init/meta-data.yaml.j2",
            )
            .unwrap_err();
        assert!(
            error.to_string().starts_with(&path.display().to_string()),
            "{error}"
        );
        let builtin = sources.load("cloud-init/user-data.yaml.j2").unwrap();
        assert!(builtin.override_path.is_none());
        assert!(matches!(
            sources.load("cloud-init/nope.yaml.j2"),
            Err(TemplateError::Unknown { .. })
        ));
    }
}
