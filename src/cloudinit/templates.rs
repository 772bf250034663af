//! The seed documents' templates (`templates/cloud-init/`): the three built-ins, each replaceable by
//! `<override dir>/cloud-init/<name>`, compiled once per seed builder in the cloud-init dialect
//! (see [`crate::templates`]), and every render checked to be a YAML mapping.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::{Environment, Value};

use super::CloudInitError;
use crate::templates::{Dialect, Sources, TemplateError};

pub(crate) const USER_DATA: &str = "cloud-init/user-data.yaml.j2";
pub(crate) const NETWORK_CONFIG: &str = "cloud-init/network-config.yaml.j2";
pub(crate) const META_DATA: &str = "cloud-init/meta-data.yaml.j2";

const NAMES: [&str; 3] = [USER_DATA, NETWORK_CONFIG, META_DATA];

/// The set of seed templates. Every `{{ value }}` is rendered as a quoted YAML flow node (auto-escape,
/// see [`crate::templates::escape`]), and the `yaml` filter does the same explicitly, so user-controlled
/// strings can never break the document structure, not even inside a comment.
#[derive(Debug)]
pub struct Templates {
    environment: Environment<'static>,
    /// Per template, what errors call it: the override file, or the built-in's name.
    labels: BTreeMap<&'static str, String>,
}

impl Templates {
    /// The templates shipped in `templates/cloud-init/`.
    pub fn builtin() -> Templates {
        match Self::load(&Sources::builtin()) {
            Ok(templates) => templates,
            // The built-in templates are compiled into the binary and covered by tests.
            Err(error) => unreachable!("built-in cloud-init templates do not load: {error}"),
        }
    }

    /// The built-in templates, each of `cloud-init/user-data.yaml.j2`,
    /// `cloud-init/network-config.yaml.j2` and `cloud-init/meta-data.yaml.j2` found under `dir` (a
    /// workspace's `templates/`) taking precedence. A file that cannot be read or compiled is an
    /// error naming it.
    pub fn with_overrides(dir: &Path) -> Result<Templates, CloudInitError> {
        Self::load(&Sources::with_overrides(dir))
    }

    fn load(sources: &Sources) -> Result<Templates, CloudInitError> {
        let mut environment = crate::templates::environment(Dialect::CloudInit);
        let mut labels = BTreeMap::new();
        for name in NAMES {
            let label = sources
                .add_to(&mut environment, name)
                .map_err(|error| match error {
                    TemplateError::Io { path, source } => CloudInitError::Io { path, source },
                    TemplateError::Syntax { label, source } => CloudInitError::Template {
                        name: label,
                        source,
                    },
                    TemplateError::Unknown { name } => CloudInitError::Template {
                        source: minijinja::Error::new(
                            minijinja::ErrorKind::TemplateNotFound,
                            "no such template",
                        ),
                        name,
                    },
                })?;
            labels.insert(name, label);
        }
        Ok(Templates {
            environment,
            labels,
        })
    }

    /// What errors call template `name`: its override file, or the built-in's name.
    pub(crate) fn label(&self, name: &str) -> String {
        self.labels
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }

    /// Render `name` and check that the result is a YAML mapping.
    pub(crate) fn render_yaml(&self, name: &str, context: Value) -> Result<String, CloudInitError> {
        let template_error = |source| CloudInitError::Template {
            name: self.label(name),
            source,
        };
        let rendered = self
            .environment
            .get_template(name)
            .and_then(|template| template.render(context))
            .map_err(template_error)?;
        let document: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&rendered).map_err(|source| CloudInitError::InvalidYaml {
                name: self.label(name),
                source,
            })?;
        if !document.is_mapping() {
            return Err(CloudInitError::UnexpectedDocument {
                name: self.label(name),
                message: "a document that is not a YAML mapping".to_owned(),
            });
        }
        Ok(rendered)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every value of every seed template, hostile (also the comment line's hostname): the documents keep
    /// exactly their keys and the values come back unchanged.
    #[test]
    fn seed_templates_keep_hostile_values_as_strings() {
        let templates = Templates::builtin();
        for hostile in [
            "h\nruncmd: [[touch, /pwned]]\n---\nx: y",
            "a: b # c '\"",
            "k\u{2028}bootcmd: [id]\u{85}z",
        ] {
            let user_data = templates
                .render_yaml(
                    USER_DATA,
                    minijinja::context! {
                        hostname => hostile, fqdn => hostile, user => hostile,
                        authorized_keys => [hostile], host_private_key => hostile,
                        host_public_key => hostile, package_update => true, packages => [hostile],
                        write_files => [minijinja::context! {
                            path => hostile, content => hostile, permissions => hostile, owner => hostile,
                        }],
                        runcmd => [[hostile]],
                    },
                )
                .unwrap();
            let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&user_data).unwrap();
            let keys: Vec<&str> = document
                .as_mapping()
                .unwrap()
                .keys()
                .map(|k| k.as_str().unwrap())
                .collect();
            assert_eq!(
                keys,
                [
                    "hostname",
                    "fqdn",
                    "manage_etc_hosts",
                    "users",
                    "disable_root",
                    "ssh_pwauth",
                    "ssh_deletekeys",
                    "ssh_genkeytypes",
                    "ssh_keys",
                    "package_update",
                    "package_upgrade",
                    "packages",
                    "swap",
                    "write_files",
                    "runcmd",
                ],
                "{user_data}"
            );
            assert_eq!(document["hostname"].as_str(), Some(hostile));
            assert_eq!(
                document["ssh_keys"]["ed25519_private"].as_str(),
                Some(hostile)
            );
            assert_eq!(document["runcmd"][0][0].as_str(), Some(hostile));
            assert_eq!(document["runcmd"].as_sequence().map(Vec::len), Some(1));
            let network = templates
                .render_yaml(
                    NETWORK_CONFIG,
                    minijinja::context! {
                        interface => hostile, mac => hostile, address => hostile,
                        gateway_key => hostile, gateway => hostile, mtu => 1500,
                        dns => [hostile], search => [hostile],
                    },
                )
                .unwrap();
            let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&network).unwrap();
            assert_eq!(document.as_mapping().unwrap().len(), 2, "{network}");
            let ethernet = &document["ethernets"][hostile];
            assert_eq!(ethernet[hostile].as_str(), Some(hostile), "{network}");
            assert_eq!(ethernet["mtu"].as_u64(), Some(1500));
            let meta = templates
                .render_yaml(
                    META_DATA,
                    minijinja::context! { instance_id => hostile, hostname => hostile },
                )
                .unwrap();
            let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&meta).unwrap();
            assert_eq!(document.as_mapping().unwrap().len(), 2, "{meta}");
        }
    }

    /// An override directory (a workspace's `templates/`) with its `cloud-init/` subdirectory.
    fn override_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cloud-init")).unwrap();
        dir
    }

    #[test]
    fn override_directory_replaces_only_present_templates() {
        let dir = override_dir();
        std::fs::write(
            dir.path().join(META_DATA),
            "instance-id: {{ instance_id | yaml }}\nlocal-hostname: custom\n",
        )
        .unwrap();
        let templates = Templates::with_overrides(dir.path()).unwrap();
        let rendered = templates
            .render_yaml(
                META_DATA,
                minijinja::context! { instance_id => "i-1", hostname => "h" },
            )
            .unwrap();
        assert!(rendered.contains("local-hostname: custom"));
        assert!(
            templates
                .environment
                .get_template(USER_DATA)
                .unwrap()
                .source()
                .starts_with("#cloud-config")
        );
    }

    #[test]
    fn override_rendering_invalid_yaml_is_an_error() {
        let dir = override_dir();
        std::fs::write(dir.path().join(META_DATA), "a: [unclosed\n").unwrap();
        let templates = Templates::with_overrides(dir.path()).unwrap();
        let error = templates
            .render_yaml(META_DATA, minijinja::context! {})
            .unwrap_err();
        assert!(
            matches!(error, CloudInitError::InvalidYaml { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains(dir.path().to_str().unwrap()),
            "{error}"
        );
    }

    #[test]
    fn override_with_syntax_error_names_the_file() {
        let dir = override_dir();
        let path = dir.path().join(USER_DATA);
        std::fs::write(&path, "{% if %}").unwrap();
        let error = Templates::with_overrides(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }
}
