//! Integration tests: one binary.

mod cli;
mod profiles;
mod pve_client;
