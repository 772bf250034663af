//! Workspace template overrides (`<workspace>/templates/<path under templates/>`): a cloud-init and a
//! manifest override take effect, keep their escaping and checks, and a broken one is an error
//! naming its file, in the builders and through the binary.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use provision::cloudinit::{self, HostKeys, SeedInput};
use provision::k3s::manifests::render_manifests;

use crate::support::cli::BinaryWorkspace;
use crate::support::{fake_cluster, sim};

fn builtin(name: &str) -> &'static str {
    provision::templates::BUILTIN
        .iter()
        .find(|(builtin, _)| *builtin == name)
        .map(|(_, text)| *text)
        .unwrap()
}

/// Writes `text` as the override of `name` below `dir` (a workspace's `templates/`).
fn write_override(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

fn seed_input(keys: &HostKeys) -> SeedInput<'_> {
    SeedInput {
        hostname: "homelab-ha-cp-1".to_owned(),
        fqdn: None,
        instance_id: "provision-homelab-ha-cp-1".to_owned(),
        user: "debian".to_owned(),
        authorized_keys: vec![sim::USER_KEY.to_owned()],
        address: "192.168.50.11".parse().unwrap(),
        prefix_len: 24,
        gateway: "192.168.50.1".parse().unwrap(),
        dns: vec!["192.168.50.1".parse().unwrap()],
        search_domain: None,
        mtu: None,
        mac: None,
        host_keys: keys,
        packages: vec![],
        extra_runcmd: vec![],
        write_files: vec![],
    }
}

#[test]
fn a_cloud_init_override_takes_effect_with_the_same_escaping_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let keys = HostKeys::generate("homelab-ha-cp-1").unwrap();
    let input = seed_input(&keys);
    let builtin_seed = cloudinit::build_seed(&input).unwrap();
    write_override(
        dir.path(),
        "cloud-init/user-data.yaml.j2",
        &format!(
            "{}bootcmd:\n  - [echo, {{{{ hostname }}}}]\n",
            builtin("cloud-init/user-data.yaml.j2")
        ),
    );
    let templates = cloudinit::Templates::with_overrides(dir.path()).unwrap();
    let seed = cloudinit::build_seed_with(&templates, &input).unwrap();
    // The raw `{{ hostname }}` is still written as a quoted YAML string.
    assert!(
        seed.user_data
            .ends_with("bootcmd:\n  - [echo, \"homelab-ha-cp-1\"]\n"),
        "{}",
        seed.user_data
    );
    assert_eq!(seed.network_config, builtin_seed.network_config);
    assert_ne!(seed.meta_data, builtin_seed.meta_data, "a new instance-id");

    // The rendered user-data is still checked.
    let path = write_override(
        dir.path(),
        "cloud-init/user-data.yaml.j2",
        "hostname: {{ hostname }}\n",
    );
    let templates = cloudinit::Templates::with_overrides(dir.path()).unwrap();
    let error = cloudinit::build_seed_with(&templates, &input).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("#cloud-config"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn a_manifest_override_takes_effect_and_must_render_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let profile = sim::builtin("homelab-ha");
    let path = write_override(
        dir.path(),
        "manifests/kube-vip.yaml.j2",
        "# kube-vip for {{ vip }}\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: vip}\ndata: {vip: {{ vip }}}\n",
    );
    let templates = provision::k3s::templates::Templates::with_overrides(dir.path());
    let manifests = render_manifests(&templates, &profile, None).unwrap();
    let kube_vip = manifests
        .iter()
        .find(|manifest| manifest.file_name == "provision-kube-vip.yaml")
        .unwrap();
    let vip = profile.cluster.api_vip.unwrap().to_string();
    assert_eq!(
        kube_vip.content,
        format!(
            "# kube-vip for \"{vip}\"\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: vip}}\ndata: {{vip: \"{vip}\"}}\n"
        )
    );
    // The other manifests are the built-ins.
    let builtin = render_manifests(
        &provision::k3s::templates::Templates::builtin(),
        &profile,
        None,
    )
    .unwrap();
    assert_eq!(manifests.len(), builtin.len());

    std::fs::write(&path, "data: {vip: {{ vip }}\n").unwrap();
    let error = render_manifests(&templates, &profile, None).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("invalid YAML"), "{message}");
}

/// The seed ISO names in a plan's JSON, in order.
fn seed_isos(plan: &str) -> Vec<String> {
    plan.split("local:iso/")
        .skip(1)
        .map(|rest| rest.split(',').next().unwrap().to_owned())
        .collect()
}

#[test]
fn the_binary_reads_overrides_from_the_workspace_and_names_a_broken_one() {
    let binary = BinaryWorkspace::new();
    binary.user_key();
    // Stored host keys, so the seeds (and their ISO names) are the same on every run.
    let host_keys = binary.workspace().join(".provision/secrets/host-keys");
    for vm in ["ci-server-1", "ci-agent-1"] {
        HostKeys::load_or_generate(&host_keys, vm).unwrap();
    }
    let plan = [
        "plan",
        "--profile",
        "ci-nested",
        "--output",
        "json",
        "--simulate",
    ];
    let (code, stdout, stderr) = binary.run(&plan);
    assert_eq!(code, 0, "{stderr}");
    let builtin_isos = seed_isos(&stdout);
    assert_eq!(builtin_isos.len(), 2, "{stdout}");
    let (_, stdout, _) = binary.run(&plan);
    assert_eq!(seed_isos(&stdout), builtin_isos);

    // A customised meta-data changes every VM's seed.
    let templates = binary.workspace().join("templates");
    let meta_data = "cloud-init/meta-data.yaml.j2";
    write_override(
        &templates,
        meta_data,
        &format!("# customised\n{}", builtin(meta_data)),
    );
    let (code, stdout, stderr) = binary.run(&plan);
    assert_eq!(code, 0, "{stderr}");
    let custom_isos = seed_isos(&stdout);
    assert_eq!(custom_isos.len(), 2, "{stdout}");
    assert!(
        custom_isos.iter().all(|iso| !builtin_isos.contains(iso)),
        "{custom_isos:?} {builtin_isos:?}"
    );

    write_override(&templates, meta_data, "{% if %}\n");
    let (code, stdout, stderr) = binary.run(&plan);
    assert_ne!(code, 0, "{stdout}");
    // Named as the workspace holds it.
    assert!(
        stderr.contains("templates/cloud-init/meta-data.yaml.j2:"),
        "{stderr}"
    );
    assert!(stderr.contains("syntax error"), "{stderr}");
}

#[tokio::test]
async fn phase_2_writes_a_workspace_manifest_override_to_the_bootstrap_server() {
    let world = fake_cluster::world();
    write_override(
        &world.opts.workspace.join("templates"),
        "manifests/nfs-provisioner.yaml.j2",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: custom-nfs}\ndata: {server: {{ server }}}\n",
    );
    world.up().await.unwrap();
    let sim = world.sim.lock().unwrap();
    let (content, _) = &sim.hosts["server-1"].files["/var/lib/rancher/k3s/server/manifests/provision-nfs-provisioner.yaml"];
    let content = String::from_utf8_lossy(content);
    assert!(
        content.contains("metadata: {name: custom-nfs}"),
        "{content}"
    );
}
