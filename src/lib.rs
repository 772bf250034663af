//! provision: GPU Kubernetes (HA K3s) clusters on Proxmox VE from one profile.
//!
//! Layers (see STYLE): `profile` (TOML → validated profile), `pve` (Proxmox API),
//! `inventory` (observe), `plan` (pure decisions), `exec` (run the plan), `cloudinit`,
//! `ssh` / `nodeprep` / `k3s` (phase 2), `state` / `workspace` (local files).

pub mod cli;
pub mod cloudinit;
pub mod commands;
pub mod exec;
pub mod inventory;
pub mod k3s;
pub mod nodeprep;
pub mod plan;
pub mod profile;
pub mod reporter;
pub mod state;
pub mod workspace;

// The lower layers are crates of their own; these names keep `crate::pve::…` paths stable.
pub use provision_base::{exit, files, secret};
pub use provision_pve as pve;
pub use provision_ssh as ssh;
