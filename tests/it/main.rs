//! Integration tests: one binary.

mod support {
    pub mod cli;
    pub mod fake_cluster;
    pub mod fake_etcd;
    pub mod sim;
    pub mod sim_serve;
    pub mod testbed;
}

mod cli;
mod clones;
mod cloudinit;
mod clusters;
mod code_shape;
mod crash;
mod day2;
mod day2_rolling;
mod drain;
mod e2e;
mod etcd_ops;
mod exitcodes;
mod hostile;
mod hostile_workspace;
mod interrupt;
mod k3s;
mod k3s_upgrade;
mod layers;
mod nodeprep;
mod phase2;
mod plan;
mod preflight;
mod profiles;
mod pve_client;
mod replace;
mod replace_refusals;
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
