//! Cluster profiles: TOML → validated [`Profile`], with located diagnostics.

pub mod model;

pub use model::Profile;
