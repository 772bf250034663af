//! The clone strategies in the planner: one template per node after the VMs' ids, its create
//! parameters, the VMs' params without an OS disk, reuse of a recorded template, and storages
//! that cannot link.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::profile::model::ImageStrategy;
use crate::state::TemplateRecord;

fn linked() -> Profile {
    let mut profile = profile();
    profile.image.strategy = ImageStrategy::LinkedClone;
    profile.node_groups[1].count = 1;
    profile
}

#[test]
fn each_node_with_new_vms_gets_one_template_after_the_vms_ids() {
    let profile = linked();
    let inventory = inventory(AuthKind::RootTicket);
    let plan = plan(&profile, &inventory, &State::default(), &context()).unwrap();
    let nodes: BTreeSet<&str> = plan.vms.iter().map(|vm| vm.node.0.as_str()).collect();
    assert_eq!(plan.templates.len(), nodes.len());
    let highest_vm = plan.vms.iter().map(|vm| vm.vmid.0).max().unwrap();
    for template in &plan.templates {
        assert_eq!(template.action, TemplateAction::Create);
        assert!(template.vmid.0 > highest_vm, "{template:?}");
        assert_eq!(template.params["template"], "1");
        assert!(
            template.params["scsi0"].starts_with("local-lvm:0,import-from=local:import/debian-12"),
            "{template:?}"
        );
        assert!(template.params["tags"].contains(TEMPLATE_TAG));
        assert_eq!(template.params["name"], template.name);
    }
    for vm in &plan.vms {
        assert!(!vm.params.contains_key("scsi0"), "{}", vm.name);
        let ImageSource::Template { name, strategy, .. } = &vm.image else {
            panic!("{} is not cloned: {:?}", vm.name, vm.image);
        };
        assert_eq!(*strategy, ImageStrategy::LinkedClone);
        assert!(
            plan.templates
                .iter()
                .any(|t| &t.name == name && t.node == vm.node)
        );
    }
    // The image is still downloaded: the templates import it.
    assert!(!plan.downloads.is_empty());
}

#[test]
fn a_recorded_template_that_exists_is_kept_and_needs_no_download() {
    let profile = linked();
    let mut inventory = inventory(AuthKind::RootTicket);
    let first = plan(&profile, &inventory, &State::default(), &context()).unwrap();
    let template = first.templates[0].clone();
    let mut state = State::default();
    state.templates.insert(
        template.name.clone(),
        TemplateRecord {
            name: template.name.clone(),
            vmid: template.vmid.0,
            node: template.node.0.clone(),
            image: template.image.clone(),
            storage: template.storage.clone(),
            phase: VmPhase::Ready,
        },
    );
    inventory.vms.push(ExistingVm {
        vmid: template.vmid.0,
        node: template.node.0.clone(),
        name: template.name.clone(),
        tags: vec![
            "provision".into(),
            "cluster-lab".into(),
            TEMPLATE_TAG.into(),
        ],
        status: "stopped".into(),
        lock: None,
        template: true,
        config: Params::new(),
    });
    let again = plan(&profile, &inventory, &state, &context()).unwrap();
    let kept = again
        .templates
        .iter()
        .find(|t| t.name == template.name)
        .unwrap();
    assert_eq!(kept.action, TemplateAction::Keep);
    assert_eq!(kept.vmid, template.vmid);
    assert!(kept.params.is_empty());
    for vm in again.vms.iter().filter(|vm| vm.node == template.node) {
        assert!(vm.image_download.is_none(), "{}", vm.name);
    }
    // No VM takes the template's id, and the template is no stray.
    assert!(again.vms.iter().all(|vm| vm.vmid != template.vmid));
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
}

#[test]
fn linked_clones_are_refused_on_a_storage_that_cannot_link() {
    let profile = linked();
    let mut inventory = inventory(AuthKind::RootTicket);
    for node in &mut inventory.nodes {
        for storage in &mut node.storages {
            if storage.storage == "local-lvm" {
                storage.kind = "lvm".into();
            }
        }
    }
    let error = plan(&profile, &inventory, &State::default(), &context()).unwrap_err();
    assert!(
        matches!(&error, PlanError::StorageCannotLink { storage, kind, .. } if storage == "local-lvm" && kind == "lvm"),
        "{error}"
    );
    // A full clone copies: any storage will do.
    let mut full = profile.clone();
    full.image.strategy = ImageStrategy::FullClone;
    assert!(plan(&full, &inventory, &State::default(), &context()).is_ok());
}

#[test]
fn the_preflight_lists_what_the_clone_path_needs() {
    let profile = linked();
    let plan = plan(
        &profile,
        &inventory(AuthKind::RootTicket),
        &State::default(),
        &context(),
    )
    .unwrap();
    let needs = super::privileges::required_privileges(&plan, "vmbr0", None);
    let has = |path: &str, privilege: &str| {
        needs
            .iter()
            .any(|need| need.path == path && need.privilege == privilege)
    };
    for template in &plan.templates {
        let path = format!("/vms/{}", template.vmid);
        assert!(has(&path, "VM.Clone"), "{needs:?}");
        assert!(has(&path, "VM.Allocate"), "{needs:?}");
        assert!(has(&path, "VM.Config.Disk"), "{needs:?}");
        assert!(has(&path, "VM.Config.HWType"), "{needs:?}");
    }
    assert!(has("/storage/local-lvm", "Datastore.AllocateSpace"));
    for vm in &plan.vms {
        assert!(
            has(&format!("/vms/{}", vm.vmid), "VM.Allocate"),
            "{}",
            vm.name
        );
    }
}
