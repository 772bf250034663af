//! Integration tests: one binary.

mod support {
    pub mod testbed;
}

mod cli;
mod cloudinit;
mod e2e;
mod k3s;
mod nodeprep;
mod phase2;
mod profiles;
mod pve_client;
mod ssh;
mod testbed;
