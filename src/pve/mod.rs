//! Proxmox VE API: the [`PveApi`] trait, its reqwest client, typed ids and task waiting.

pub mod api;
pub mod error;
pub mod types;

pub use api::PveApi;
pub use error::PveError;
pub use types::{NodeName, Params, PciAddress, Upid, VmId, VolumeId};
