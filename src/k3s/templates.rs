//! The minijinja templates under `templates/`: built into the binary, overridable per workspace.
//!
//! A file at `<override dir>/<name>` (the workspace's `templates/`) replaces the built-in one of the
//! same name, so users can adjust a manifest without rebuilding provision.

use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use serde::Serialize;

use super::K3sError;

/// Built-in templates, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "k3s/config.yaml.j2",
        include_str!("../../templates/k3s/config.yaml.j2"),
    ),
    (
        "systemd/k3s.service.j2",
        include_str!("../../templates/systemd/k3s.service.j2"),
    ),
    (
        "systemd/k3s-agent.service.j2",
        include_str!("../../templates/systemd/k3s-agent.service.j2"),
    ),
    (
        "manifests/kube-vip.yaml.j2",
        include_str!("../../templates/manifests/kube-vip.yaml.j2"),
    ),
    (
        "manifests/nvidia-gpu-operator.yaml.j2",
        include_str!("../../templates/manifests/nvidia-gpu-operator.yaml.j2"),
    ),
    (
        "manifests/nvidia-runtimeclass.yaml.j2",
        include_str!("../../templates/manifests/nvidia-runtimeclass.yaml.j2"),
    ),
    (
        "manifests/nfs-provisioner.yaml.j2",
        include_str!("../../templates/manifests/nfs-provisioner.yaml.j2"),
    ),
    (
        "manifests/local-path-provisioner.yaml.j2",
        include_str!("../../templates/manifests/local-path-provisioner.yaml.j2"),
    ),
    (
        "manifests/flux.yaml.j2",
        include_str!("../../templates/manifests/flux.yaml.j2"),
    ),
    (
        "manifests/flux-sync.yaml.j2",
        include_str!("../../templates/manifests/flux-sync.yaml.j2"),
    ),
    (
        "manifests/argocd.yaml.j2",
        include_str!("../../templates/manifests/argocd.yaml.j2"),
    ),
    (
        "manifests/argocd-root.yaml.j2",
        include_str!("../../templates/manifests/argocd-root.yaml.j2"),
    ),
    (
        "manifests/fleet.yaml.j2",
        include_str!("../../templates/manifests/fleet.yaml.j2"),
    ),
    (
        "manifests/fleet-gitrepo.yaml.j2",
        include_str!("../../templates/manifests/fleet-gitrepo.yaml.j2"),
    ),
];

/// Renders templates: built-ins, with optional per-workspace overrides.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    override_dir: Option<PathBuf>,
}

impl Templates {
    /// Built-in templates only.
    pub fn builtin() -> Self {
        Self { override_dir: None }
    }

    /// Built-ins, each replaced by `<dir>/<name>` when that file exists.
    pub fn with_overrides(dir: &Path) -> Self {
        Self {
            override_dir: Some(dir.to_path_buf()),
        }
    }

    fn source(&self, name: &str) -> Result<String, K3sError> {
        if let Some(dir) = &self.override_dir {
            let path = dir.join(name);
            if path.is_file() {
                return std::fs::read_to_string(&path).map_err(|source| K3sError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        }
        BUILTIN
            .iter()
            .find(|(builtin, _)| *builtin == name)
            .map(|(_, text)| (*text).to_owned())
            .ok_or_else(|| K3sError::Template {
                name: name.to_owned(),
                message: "no such template".to_owned(),
            })
    }

    /// Render template `name` with `context`.
    pub fn render<S: Serialize>(&self, name: &str, context: &S) -> Result<String, K3sError> {
        let source = self.source(name)?;
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.add_filter("tojson", to_json);
        let template_error = |error: minijinja::Error| K3sError::Template {
            name: name.to_owned(),
            message: format!("{error:#}"),
        };
        env.add_template_owned(name.to_owned(), source)
            .map_err(template_error)?;
        env.get_template(name)
            .and_then(|template| template.render(context))
            .map_err(template_error)
    }
}

/// `value | tojson`: a JSON literal, which is also a valid YAML flow scalar (strings get quoted and escaped).
fn to_json(value: Value) -> Result<String, minijinja::Error> {
    serde_json::to_string(&value).map_err(|error| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("cannot encode as JSON: {error}"),
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn override_replaces_builtin() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        std::fs::write(
            dir.path().join("manifests/nvidia-runtimeclass.yaml.j2"),
            "custom {{ x }}",
        )
        .unwrap();
        let templates = Templates::with_overrides(dir.path());
        let out = templates
            .render(
                "manifests/nvidia-runtimeclass.yaml.j2",
                &serde_json::json!({"x": 1}),
            )
            .unwrap();
        assert_eq!(out, "custom 1");
        let builtin = Templates::builtin()
            .render(
                "manifests/nvidia-runtimeclass.yaml.j2",
                &serde_json::json!({}),
            )
            .unwrap();
        assert!(builtin.contains("handler: nvidia"));
    }

    #[test]
    fn undefined_variables_are_errors() {
        let error = Templates::builtin()
            .render("manifests/fleet-gitrepo.yaml.j2", &serde_json::json!({}))
            .unwrap_err();
        assert!(error.to_string().contains("fleet-gitrepo"), "{error}");
    }

    #[test]
    fn tojson_quotes_yaml_specials() {
        assert_eq!(to_json(Value::from("a: b")).unwrap(), "\"a: b\"");
        assert_eq!(to_json(Value::from(3)).unwrap(), "3");
    }
}
