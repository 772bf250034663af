//! Proxmox VE API: the [`PveApi`] trait, its reqwest client, typed ids, property strings and CPU
//! lists, retry policy, and bounded condition-based waiting (tasks, guest agent).

pub mod api;
pub mod auth;
pub mod batch;
pub mod client;
pub mod cpulist;
pub mod error;
pub mod privileges;
pub mod propstr;
pub mod retry;
pub mod split;
pub mod task;
pub mod tls;
pub mod types;
pub mod wait;

pub use api::PveApi;
pub use auth::{Auth, Secret};
pub use batch::{NodeTaskPoller, PollOptions};
pub use client::{ClientConfig, PveClient, normalize_endpoint};
pub use cpulist::CpuList;
pub use error::PveError;
pub use retry::RetryPolicy;
pub use task::{WaitOptions, wait_for_task, wait_for_task_on};
pub use tls::{TlsMode, fingerprint_of};
pub use types::{NodeName, Params, PciAddress, Upid, VmId, VolumeId};
