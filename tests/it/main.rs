//! Integration tests: one binary.

mod cli;
mod cloudinit;
mod profiles;
mod pve_client;
