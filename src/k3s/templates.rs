//! The cluster's templates (`templates/{k3s,manifests,systemd}/`): built into the binary, each
//! replaceable by a file at the same relative path in the workspace's `templates/` (see
//! [`crate::templates`]), so users can adjust a manifest without rebuilding provision.
//!
//! Values are escaped by the file's kind, whether or not the template asks (the cluster dialect of
//! [`crate::templates::environment`]): in `*.yaml.j2` every `{{ value }}` is a quoted YAML flow node (a
//! newline in a repository URL cannot add a Kubernetes object that k3s would apply as cluster-admin,
//! not even from a comment line), and what a `*.yaml.j2` renders must parse as YAML; in systemd units
//! a value must be one plain word, anything else is an error.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::K3sError;
use crate::templates::{Dialect, Sources, TemplateError};

/// Renders templates: built-ins, with optional per-workspace overrides.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    sources: Sources,
}

impl Templates {
    /// Built-in templates only.
    pub fn builtin() -> Self {
        Self {
            sources: Sources::builtin(),
        }
    }

    /// Built-ins, each replaced by `<dir>/<name>` when that file exists (`dir` is the workspace's
    /// `templates/`; `name` is like `manifests/kube-vip.yaml.j2`).
    pub fn with_overrides(dir: &Path) -> Self {
        Self {
            sources: Sources::with_overrides(dir),
        }
    }

    /// Render template `name` with `context`. Errors name the override file when there is one.
    pub fn render<S: Serialize>(&self, name: &str, context: &S) -> Result<String, K3sError> {
        let mut environment = crate::templates::environment(Dialect::Cluster);
        let label = self
            .sources
            .add_to(&mut environment, name)
            .map_err(|error| match error {
                TemplateError::Io { path, source } => K3sError::Io {
                    path: path.display().to_string(),
                    source,
                },
                TemplateError::Syntax { label, source } => K3sError::Template {
                    name: label,
                    message: format!("{source:#}"),
                },
                TemplateError::Unknown { name } => K3sError::Template {
                    name,
                    message: "no such template".to_owned(),
                },
            })?;
        let template_error = |message: String| K3sError::Template {
            name: label.clone(),
            message,
        };
        let rendered = environment
            .get_template(name)
            .and_then(|template| template.render(context))
            .map_err(|error| template_error(format!("{error:#}")))?;
        if name.ends_with(".yaml.j2") || name.ends_with(".yml.j2") {
            check_yaml(&rendered).map_err(template_error)?;
        }
        Ok(rendered)
    }
}

/// Every document of a rendered YAML template parses.
fn check_yaml(rendered: &str) -> Result<(), String> {
    for document in serde_yaml_ng::Deserializer::from_str(rendered) {
        serde_yaml_ng::Value::deserialize(document)
            .map_err(|error| format!("rendered invalid YAML: {error}"))?;
    }
    Ok(())
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
    fn raw_values_in_yaml_templates_are_quoted_even_in_comments() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        std::fs::write(
            dir.path().join("manifests/fleet-gitrepo.yaml.j2"),
            "# follows {{ repo }}\nrepo: {{ repo }}\nn: {{ n }}\nsafe: {{ repo | tojson }}\n",
        )
        .unwrap();
        let hostile = "x\n---\nkind: ClusterRoleBinding # : '\"";
        let out = Templates::with_overrides(dir.path())
            .render(
                "manifests/fleet-gitrepo.yaml.j2",
                &serde_json::json!({"repo": hostile, "n": 3}),
            )
            .unwrap();
        let documents: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&out)
            .map(|document| serde::Deserialize::deserialize(document).unwrap())
            .collect();
        assert_eq!(documents.len(), 1, "{out}");
        assert_eq!(documents[0]["repo"].as_str(), Some(hostile));
        assert_eq!(documents[0]["safe"].as_str(), Some(hostile));
        assert_eq!(documents[0]["n"].as_u64(), Some(3));
        assert_eq!(out.lines().count(), 4, "{out}");
    }

    #[test]
    fn systemd_units_refuse_values_that_are_not_one_word() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("systemd")).unwrap();
        std::fs::write(
            dir.path().join("systemd/k3s.service.j2"),
            "ExecStart={{ binary }} {{ mode }}\n",
        )
        .unwrap();
        let templates = Templates::with_overrides(dir.path());
        let ok = templates
            .render(
                "systemd/k3s.service.j2",
                &serde_json::json!({"binary": "/usr/local/bin/k3s", "mode": "server"}),
            )
            .unwrap();
        assert_eq!(ok, "ExecStart=/usr/local/bin/k3s server\n");
        for hostile in ["server\nExecStartPre=/bin/sh -c id", "a b", "%h", ""] {
            let error = templates
                .render(
                    "systemd/k3s.service.j2",
                    &serde_json::json!({"binary": "/usr/local/bin/k3s", "mode": hostile}),
                )
                .unwrap_err();
            assert!(error.to_string().contains("systemd unit"), "{error}");
        }
    }

    #[test]
    fn override_errors_name_the_override_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        let path = dir.path().join("manifests/nvidia-runtimeclass.yaml.j2");
        let templates = Templates::with_overrides(dir.path());
        for (source, expected) in [
            ("{% if %}", "syntax error"),
            ("a: [unclosed\n", "rendered invalid YAML"),
        ] {
            std::fs::write(&path, source).unwrap();
            let error = templates
                .render(
                    "manifests/nvidia-runtimeclass.yaml.j2",
                    &serde_json::json!({}),
                )
                .unwrap_err();
            let message = error.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(expected), "{message}");
        }
    }
}
