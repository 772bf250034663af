//! Integration tests: one binary.

mod support {
    pub mod cli;
    pub mod fake_cluster;
    pub mod sim;
    pub mod sim_serve;
    pub mod testbed;
}

mod cli;
mod cloudinit;
mod code_shape;
mod crash;
mod day2;
mod drain;
mod e2e;
mod exitcodes;
mod hostile;
mod hostile_workspace;
mod k3s;
mod layers;
mod nodeprep;
mod phase2;
mod plan;
mod preflight;
mod profiles;
mod pve_client;
mod rolling;
mod ssh;
mod ssh_auth;
mod standin;
mod status;
mod task_batch;
mod templates;
mod testbed;
mod third_party;
mod up;
