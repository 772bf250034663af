//! The `#cloud-config` user-data: login user, provision's SSH host key, guest agent, packages.

use minijinja::context;
use russh::keys::PublicKey;

use super::templates::{self, Templates};
use super::{CloudInitError, SeedInput};

/// Always installed and started: Proxmox reads guest addresses and pings the VM through it.
pub(crate) const GUEST_AGENT_PACKAGE: &str = "qemu-guest-agent";

pub(crate) fn validate(input: &SeedInput<'_>) -> Result<(), CloudInitError> {
    if !is_dns_label(&input.hostname) {
        return Err(invalid(
            "hostname",
            format!(
                "{:?} is not a DNS label (a-z, 0-9, '-', at most 63)",
                input.hostname
            ),
        ));
    }
    if let Some(fqdn) = &input.fqdn {
        let labels_ok = fqdn.len() <= 253 && fqdn.split('.').all(is_dns_label);
        if !labels_ok || fqdn.split('.').next() != Some(input.hostname.as_str()) {
            return Err(invalid(
                "fqdn",
                format!(
                    "{fqdn:?} must be `{}.<domain>` made of DNS labels",
                    input.hostname
                ),
            ));
        }
    }
    if input.instance_id.is_empty()
        || !input
            .instance_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
    {
        return Err(invalid(
            "instance_id",
            format!("{:?} must be non-empty [A-Za-z0-9._-]", input.instance_id),
        ));
    }
    if !is_user_name(&input.user) {
        return Err(invalid(
            "user",
            format!(
                "{:?} is not a valid login name ([a-z_][a-z0-9_-]*, at most 32)",
                input.user
            ),
        ));
    }
    if input.user == "root" {
        return Err(invalid(
            "user",
            "root logins are disabled; use a named user".to_owned(),
        ));
    }
    if input.authorized_keys.is_empty() {
        return Err(invalid(
            "authorized_keys",
            "at least one public key is needed to log in".to_owned(),
        ));
    }
    for key in &input.authorized_keys {
        PublicKey::from_openssh(key.trim()).map_err(|error| {
            invalid(
                "authorized_keys",
                format!("{key:?} is not an OpenSSH public key line: {error}"),
            )
        })?;
    }
    for package in &input.packages {
        let valid = !package.is_empty()
            && package
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"+-.:=_~*".contains(&byte));
        if !valid {
            return Err(invalid(
                "packages",
                format!("{package:?} is not a package name"),
            ));
        }
    }
    for command in &input.extra_runcmd {
        if command.is_empty() {
            return Err(invalid("extra_runcmd", "an empty command".to_owned()));
        }
    }
    for file in &input.write_files {
        if !file.path.starts_with('/') {
            return Err(invalid(
                "write_files",
                format!("{:?} is not absolute", file.path),
            ));
        }
        let mode_ok = (3..=4).contains(&file.permissions.len())
            && file
                .permissions
                .bytes()
                .all(|byte| (b'0'..=b'7').contains(&byte));
        if !mode_ok {
            return Err(invalid(
                "write_files",
                format!(
                    "{}: permissions {:?} are not octal like 0644",
                    file.path, file.permissions
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn render(
    templates: &Templates,
    input: &SeedInput<'_>,
) -> Result<String, CloudInitError> {
    let mut packages = vec![GUEST_AGENT_PACKAGE.to_owned()];
    for package in &input.packages {
        if !packages.contains(package) {
            packages.push(package.clone());
        }
    }
    let mut runcmd: Vec<Vec<String>> = vec![
        ["systemctl", "enable", "--now", GUEST_AGENT_PACKAGE]
            .map(str::to_owned)
            .to_vec(),
    ];
    runcmd.extend(input.extra_runcmd.iter().cloned());
    let authorized_keys: Vec<&str> = input.authorized_keys.iter().map(|key| key.trim()).collect();
    let rendered = templates.render_yaml(
        templates::USER_DATA,
        context! {
            hostname => input.hostname,
            fqdn => input.fqdn,
            user => input.user,
            authorized_keys => authorized_keys,
            host_private_key => input.host_keys.private_openssh.expose(),
            host_public_key => input.host_keys.public_openssh,
            package_update => true,
            packages => packages,
            write_files => input.write_files,
            runcmd => runcmd,
        },
    )?;
    if !rendered.starts_with("#cloud-config\n") {
        return Err(CloudInitError::UnexpectedDocument {
            name: templates.label(templates::USER_DATA),
            message: "user-data whose first line is not `#cloud-config`".to_owned(),
        });
    }
    Ok(rendered)
}

fn invalid(field: &'static str, message: String) -> CloudInitError {
    CloudInitError::InvalidInput { field, message }
}

fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

fn is_user_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|byte| byte.is_ascii_lowercase() || byte == b'_');
    first_ok
        && name.len() <= 32
        && bytes
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-".contains(&byte))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::test_support::{host_keys, input};
    use super::super::{WriteFile, build_seed};
    use super::*;

    type Mutation = Box<dyn Fn(&mut SeedInput<'_>)>;

    fn user_data(input: &SeedInput<'_>) -> serde_yaml_ng::Value {
        let seed = build_seed(input).unwrap();
        serde_yaml_ng::from_str(&seed.user_data).unwrap()
    }

    #[test]
    fn user_has_key_sudo_and_locked_password() {
        let keys = host_keys();
        let input = input(&keys);
        let document = user_data(&input);
        let user = &document["users"][0];
        assert_eq!(user["name"].as_str(), Some("ops"));
        assert_eq!(user["sudo"].as_str(), Some("ALL=(ALL) NOPASSWD:ALL"));
        assert_eq!(user["lock_passwd"].as_bool(), Some(true));
        assert_eq!(
            user["ssh_authorized_keys"][0].as_str(),
            Some(input.authorized_keys[0].as_str())
        );
        assert_eq!(document["ssh_pwauth"].as_bool(), Some(false));
        assert_eq!(document["disable_root"].as_bool(), Some(true));
        assert_eq!(document["hostname"].as_str(), Some("a100-8x-gpu-1"));
        assert_eq!(document["fqdn"].as_str(), Some("a100-8x-gpu-1.lab.example"));
        assert_eq!(document["manage_etc_hosts"].as_bool(), Some(true));
        assert_eq!(document["swap"]["size"].as_u64(), Some(0));
    }

    #[test]
    fn host_key_is_carried_verbatim() {
        let keys = host_keys();
        let document = user_data(&input(&keys));
        assert_eq!(document["ssh_deletekeys"].as_bool(), Some(true));
        let generated: Vec<&str> = document["ssh_genkeytypes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|key_type| key_type.as_str().unwrap())
            .collect();
        assert_eq!(generated, ["ed25519"]);
        assert_eq!(
            document["ssh_keys"]["ed25519_private"].as_str(),
            Some(keys.private_openssh.expose())
        );
        assert_eq!(
            document["ssh_keys"]["ed25519_public"].as_str(),
            Some(keys.public_openssh.as_str())
        );
    }

    #[test]
    fn guest_agent_is_installed_once_and_started() {
        let keys = host_keys();
        let mut input = input(&keys);
        input.packages.push(GUEST_AGENT_PACKAGE.to_owned());
        input.extra_runcmd = vec![vec!["touch".to_owned(), "/run/provisioned".to_owned()]];
        let document = user_data(&input);
        let packages: Vec<&str> = document["packages"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|package| package.as_str().unwrap())
            .collect();
        assert_eq!(packages, ["qemu-guest-agent", "nfs-common"]);
        assert_eq!(document["package_update"].as_bool(), Some(true));
        let runcmd = document["runcmd"].as_sequence().unwrap();
        assert_eq!(
            runcmd[0],
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>(
                "[systemctl, enable, --now, qemu-guest-agent]"
            )
            .unwrap()
        );
        assert_eq!(runcmd[1][1].as_str(), Some("/run/provisioned"));
    }

    #[test]
    fn write_files_survive_awkward_content() {
        let keys = host_keys();
        let mut input = input(&keys);
        let content = "line: one\n# not a comment\n  indented: \"quoted\"\n";
        input.write_files = vec![WriteFile {
            path: "/etc/provision/marker.yaml".to_owned(),
            content: content.to_owned(),
            permissions: "0640".to_owned(),
            owner: Some("root:adm".to_owned()),
        }];
        let document = user_data(&input);
        let file = &document["write_files"][1];
        assert_eq!(file["content"].as_str(), Some(content));
        assert_eq!(file["permissions"].as_str(), Some("0640"));
        assert_eq!(file["owner"].as_str(), Some("root:adm"));
    }

    #[test]
    fn guest_keeps_host_key_and_network_once_the_seed_is_gone() {
        let keys = host_keys();
        let document = user_data(&input(&keys));
        let file = &document["write_files"][0];
        assert_eq!(
            file["path"].as_str(),
            Some("/etc/cloud/cloud.cfg.d/90-provision.cfg")
        );
        let config: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(file["content"].as_str().unwrap()).unwrap();
        assert_eq!(config["network"]["config"].as_str(), Some("disabled"));
        assert_eq!(config["ssh_deletekeys"].as_bool(), Some(false));
        assert_eq!(config["ssh_genkeytypes"][0].as_str(), Some("ed25519"));
    }

    #[test]
    fn no_fqdn_no_write_files_still_valid() {
        let keys = host_keys();
        let mut input = input(&keys);
        input.fqdn = None;
        let document = user_data(&input);
        assert!(document.get("fqdn").is_none());
        assert_eq!(document["write_files"].as_sequence().map(Vec::len), Some(1));
    }

    #[test]
    fn bad_inputs_are_refused_with_the_field_name() {
        let keys = host_keys();
        let cases: Vec<(&str, Mutation)> = vec![
            ("hostname", Box::new(|i| i.hostname = "Bad_Host".to_owned())),
            ("fqdn", Box::new(|i| i.fqdn = Some("other.lab".to_owned()))),
            ("user", Box::new(|i| i.user = "root".to_owned())),
            ("user", Box::new(|i| i.user = "a b".to_owned())),
            ("authorized_keys", Box::new(|i| i.authorized_keys.clear())),
            (
                "authorized_keys",
                Box::new(|i| i.authorized_keys = vec!["ssh-ed25519 nonsense".to_owned()]),
            ),
            (
                "packages",
                Box::new(|i| i.packages = vec!["a b".to_owned()]),
            ),
            (
                "instance_id",
                Box::new(|i| i.instance_id = "a/b".to_owned()),
            ),
            ("extra_runcmd", Box::new(|i| i.extra_runcmd = vec![vec![]])),
        ];
        for (field, mutate) in cases {
            let mut bad = input(&keys);
            mutate(&mut bad);
            match build_seed(&bad) {
                Err(CloudInitError::InvalidInput { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: expected InvalidInput, got {other:?}"),
            }
        }
    }
}
