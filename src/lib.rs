//! provision: GPU Kubernetes (HA K3s) clusters on Proxmox VE from one profile.
//!
//! Layers (see STYLE): `profile` (TOML → validated profile), `pve` (Proxmox API),
//! `inventory` (observe), `plan` (pure decisions), `exec` (run the plan), `cloudinit`,
//! `ssh` / `nodeprep` / `k3s` (phase 2), `state` / `workspace` (local files).

pub mod cli;
pub mod cloudinit;
pub mod commands;
pub mod exec;
pub mod exit;
pub mod files;
pub mod inventory;
pub mod k3s;
pub mod nodeprep;
pub mod plan;
pub mod profile;
pub mod pve;
pub mod reporter;
pub mod secret;
pub mod ssh;
pub mod state;
pub mod templates;
pub mod workspace;
