//! provision: GPU Kubernetes (HA K3s) clusters on Proxmox VE from one profile.
//!
//! Layers (see STYLE): `profile` (TOML → validated profile), `pve` (Proxmox API),
//! `inventory` (observe), `plan` (pure decisions), `exec` (run the plan), `cloudinit`,
//! `ssh` / `nodeprep` / `k3s` (phase 2), `state` / `workspace` (local files).
//!
//! A module imports only from its own layer and the layers below it ([`LAYERS`]); the test
//! `tests/it/layers.rs` reads every `crate::…` path in `src/` and fails on one that points up.
//! The lowest layers are crates of their own (`provision-base`, `provision-pve`,
//! `provision-ssh`), so for them an upward import is a compile error; they are re-exported
//! below under their old module names.

/// The modules of this crate from the lowest layer to the highest; modules in one entry are
/// one layer and may use each other. `cli` (clap types only, importing nothing) sits under
/// `reporter`, which reads the global flags, and `commands`, which turns parsed arguments into
/// the lower layers' own types: nothing below `cli` may see a clap type.
pub const LAYERS: &[&[&str]] = &[
    &["files", "secret", "exit", "error"],
    &["pve", "ssh"],
    &["templates"],
    &["profile"],
    &["inventory"],
    &["state", "workspace"],
    &["plan"],
    &["cloudinit", "nodeprep", "k3s"],
    &["exec"],
    &["cli"],
    &["reporter"],
    &["commands"],
];

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
pub mod templates;
pub mod workspace;

// The lower layers are crates of their own; these names keep `crate::pve::…` paths stable.
pub use provision_base::{error, exit, files, secret};
pub use provision_pve as pve;
pub use provision_ssh as ssh;
