//! What a plan does to one VM: an [`Action`] per VM, each kind with the payload it needs
//! (a create carries its parameters, an update its changed keys, a destroy only its target).

use serde::{Serialize, Serializer};

use crate::pve::{NodeName, Params, VmId};

/// The kind of an [`Action`], for symbols, counts and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    Create,
    Update,
    Replace,
    Destroy,
}

impl ActionKind {
    pub fn symbol(self) -> &'static str {
        match self {
            ActionKind::Create => "+",
            ActionKind::Update => "~",
            ActionKind::Replace => "-/+",
            ActionKind::Destroy => "-",
        }
    }
}

/// A disk to grow after create (`PUT …/resize`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resize {
    pub disk: String,
    /// Proxmox size string (`64G`).
    pub size: String,
}

/// The VM an action is about: its name, the node it is (or will be) on, its VMID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRef {
    pub name: String,
    pub node: NodeName,
    pub vmid: VmId,
}

/// One line of the diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `POST /nodes/{node}/qemu` with exactly `params`, then resize and start.
    Create {
        target: VmRef,
        params: Params,
        resize: Vec<Resize>,
        /// Why, when an earlier run left an intent.
        reason: Option<String>,
        /// VMs whose removal must finish first: it may get GPUs, host cores, hugepages or
        /// memory they release.
        after: Vec<String>,
    },
    /// Destroy the existing VM (wherever it is now), then create it as [`Action::Create`].
    Replace {
        target: VmRef,
        params: Params,
        resize: Vec<Resize>,
        reason: String,
        after: Vec<String>,
    },
    /// In-place changes of a kept VM (`PUT …/config`), plus finishing work of an unfinished one.
    Update {
        target: VmRef,
        /// The changed keys only.
        changes: Params,
        /// What Proxmox has now for each changed key that it has (shown as `old → new`).
        was: Params,
        /// Keys removed from the config.
        delete: Vec<String>,
        resize: Vec<Resize>,
        /// Why, when there is nothing to change but the VM to resume.
        reason: Option<String>,
        /// The changes take effect only after a restart (non-metadata keys on a running VM).
        restart: bool,
    },
    /// Hard stop and purge (only while it carries the cluster tag).
    Destroy { target: VmRef },
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Create { .. } => ActionKind::Create,
            Action::Replace { .. } => ActionKind::Replace,
            Action::Update { .. } => ActionKind::Update,
            Action::Destroy { .. } => ActionKind::Destroy,
        }
    }

    pub fn target(&self) -> &VmRef {
        match self {
            Action::Create { target, .. }
            | Action::Replace { target, .. }
            | Action::Update { target, .. }
            | Action::Destroy { target } => target,
        }
    }

    /// The VM's name.
    pub fn vm(&self) -> &str {
        &self.target().name
    }

    pub fn node(&self) -> &NodeName {
        &self.target().node
    }

    pub fn vmid(&self) -> VmId {
        self.target().vmid
    }

    /// Exactly what is sent: the create parameters (create, replace) or the changed keys
    /// (update); nothing for a destroy.
    pub fn params(&self) -> Option<&Params> {
        match self {
            Action::Create { params, .. } | Action::Replace { params, .. } => Some(params),
            Action::Update { changes, .. } => Some(changes),
            Action::Destroy { .. } => None,
        }
    }

    pub fn resize(&self) -> &[Resize] {
        match self {
            Action::Create { resize, .. }
            | Action::Replace { resize, .. }
            | Action::Update { resize, .. } => resize,
            Action::Destroy { .. } => &[],
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Action::Create { reason, .. } | Action::Update { reason, .. } => reason.as_deref(),
            Action::Replace { reason, .. } => Some(reason),
            Action::Destroy { .. } => None,
        }
    }

    /// VMs whose removal must finish before this VM is created.
    pub fn after(&self) -> &[String] {
        match self {
            Action::Create { after, .. } | Action::Replace { after, .. } => after,
            Action::Update { .. } | Action::Destroy { .. } => &[],
        }
    }

    /// Where a create waits for leaving VMs (none for update and destroy).
    pub(super) fn after_mut(&mut self) -> Option<&mut Vec<String>> {
        match self {
            Action::Create { after, .. } | Action::Replace { after, .. } => Some(after),
            Action::Update { .. } | Action::Destroy { .. } => None,
        }
    }

    /// Whether the action removes a VM first (destroy, or the destroy half of a replace).
    pub fn removes_vm(&self) -> bool {
        matches!(self, Action::Destroy { .. } | Action::Replace { .. })
    }
}

/// The JSON shape of an action (`provision plan --output json`): one flat object whatever the
/// kind, `params` always present (empty for a destroy), the rest only when set.
#[derive(Serialize)]
struct ActionJson<'a> {
    action: ActionKind,
    vm: &'a str,
    node: &'a NodeName,
    vmid: VmId,
    params: &'a Params,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    delete: &'a [String],
    #[serde(skip_serializing_if = "<[Resize]>::is_empty")]
    resize: &'a [Resize],
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    restart: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    after: &'a [String],
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let empty = Params::new();
        let (delete, restart): (&[String], bool) = match self {
            Action::Update {
                delete, restart, ..
            } => (delete, *restart),
            Action::Create { .. } | Action::Replace { .. } | Action::Destroy { .. } => (&[], false),
        };
        ActionJson {
            action: self.kind(),
            vm: self.vm(),
            node: self.node(),
            vmid: self.vmid(),
            params: self.params().unwrap_or(&empty),
            delete,
            resize: self.resize(),
            reason: self.reason(),
            restart,
            after: self.after(),
        }
        .serialize(serializer)
    }
}
