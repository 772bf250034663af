//! What a command asks of the planner: one input (profile, inventory, state, context) and an
//! [`Intent`], so every verb is previewed by `provision plan` and executed the same way.

use serde::Serialize;

use crate::inventory::Inventory;
use crate::profile::model::Profile;
use crate::state::State;

use super::PlanContext;

/// Everything a plan is computed from: what the profile asks, what Proxmox shows, what the
/// workspace remembers, and the few inputs that are neither.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub profile: &'a Profile,
    pub inventory: &'a Inventory,
    pub state: &'a State,
    pub context: &'a PlanContext,
}

/// What the plan is for. Each verb is one variant; the planner turns it into actions and
/// `exec` only carries them out.
///
/// Verbs still to come get their own variant here and their own pass in `plan/`:
/// `Drain { node }` (move a node's VMs elsewhere, as Converge with the node excluded from
/// placement) and `Gc` (tagged VMs, ISOs and mappings no state knows).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Intent {
    /// Make Proxmox match the profile (`up`, `plan`).
    #[default]
    Converge,
    /// Remove the cluster: every VM in the state that still carries the cluster tag and its
    /// name (`down`, `plan --destroy`).
    Down,
    /// Replace one node's VM by a new machine of the same name, address and GPU mappings, with
    /// the k3s/etcd steps around it (`replace-node`, `plan --replace-node`).
    ReplaceNode { node: String },
}
