//! The minijinja templates under `templates/`: built into the binary, overridable per workspace.
//!
//! A file at `<override dir>/<name>` (the workspace's `templates/`) replaces the built-in one of the
//! same name, so users can adjust a manifest without rebuilding provision.
//!
//! Values are escaped by the file's kind, whether or not the template asks: in `*.yaml.j2` every
//! `{{ value }}` is a quoted YAML flow node (a newline in a repository URL cannot add a Kubernetes object
//! that k3s would apply as cluster-admin, not even from a comment line); in systemd units a value must
//! be one plain word, anything else is an error.

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
        env.set_auto_escape_callback(escape_for);
        env.set_formatter(format_value);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.add_filter("tojson", to_json);
        env.add_filter("yaml", to_json);
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

/// Escaping of systemd unit templates: values must be single plain words.
const SYSTEMD_ESCAPE: AutoEscape = AutoEscape::Custom("systemd");

/// How a template's values are escaped, by its file name.
fn escape_for(name: &str) -> AutoEscape {
    if name.ends_with(".yaml.j2") || name.ends_with(".yml.j2") {
        crate::cloudinit::templates::YAML_ESCAPE
    } else if name.ends_with(".service.j2") {
        SYSTEMD_ESCAPE
    } else {
        AutoEscape::None
    }
}

/// YAML values as JSON flow nodes that YAML reads back unchanged (see [`to_json`]); systemd values only when they are
/// one word of `[A-Za-z0-9/._@:+=-]` (systemd has no quoting that survives every directive).
fn format_value(
    out: &mut minijinja::Output,
    state: &minijinja::State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if state.auto_escape() == SYSTEMD_ESCAPE {
        let text = value.to_string();
        let plain = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._@:+=-".contains(&b));
        if !plain {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!(
                    "{text:?} cannot go into a systemd unit (only [A-Za-z0-9/._@:+=-] are allowed)"
                ),
            ));
        }
        return out.write_str(&text).map_err(minijinja::Error::from);
    }
    if state.auto_escape() == crate::cloudinit::templates::YAML_ESCAPE && !value.is_safe() {
        let rendered = crate::cloudinit::templates::json_scalar(value.clone())?;
        return out.write_str(&rendered).map_err(minijinja::Error::from);
    }
    minijinja::escape_formatter(out, state, value)
}

/// `value | tojson` (also `yaml`): a JSON literal that is also a YAML flow node read back unchanged;
/// controls and line separators are `\uXXXX` (plain JSON leaves U+2028 raw, which YAML 1.1 parsers such
/// as k3s's take as a line break). Marked safe, so auto-escape leaves it alone.
fn to_json(value: Value) -> Result<Value, minijinja::Error> {
    crate::cloudinit::templates::json_scalar(value).map(Value::from_safe_string)
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
        assert_eq!(
            to_json(Value::from("a: b")).unwrap().as_str(),
            Some("\"a: b\"")
        );
        assert_eq!(to_json(Value::from(3)).unwrap().to_string(), "3");
        assert_eq!(
            to_json(Value::from("a\u{2028}b")).unwrap().as_str(),
            Some("\"a\\u2028b\"")
        );
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
}
