//! Integration tests: one binary.
mod pve_client;
