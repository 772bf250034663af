//! Rolling disruptions: a disruptive action (restart, replace, scale-down destroy) of wave N
//! starts only when every action of the earlier waves is done, its VM back (started, guest
//! agent reporting its address). Around each one exec asks a [`RollingGate`]: the k3s gate
//! drains the node first and waits for it to be Ready and uncordons it after.

use async_trait::async_trait;

use crate::plan::WaveVm;

/// What runs around each disruptive action of a rolling plan.
#[async_trait]
pub trait RollingGate: Send + Sync {
    /// Before `vm` is stopped, replaced or destroyed: refuse (an error stops the run before
    /// anything of `vm` changed) or make room (drain).
    async fn before_disruption(&self, vm: &WaveVm) -> anyhow::Result<()>;
    /// After `vm` is back (restarted or re-created, guest agent answering); not called for a
    /// destroy.
    async fn after_recovery(&self, vm: &WaveVm) -> anyhow::Result<()>;
}

/// No cluster to care about (phase 1 only, fresh VMs, the simulator without guests): exec's
/// own wait for the guest agent is all.
pub struct NoGate;

#[async_trait]
impl RollingGate for NoGate {
    async fn before_disruption(&self, _vm: &WaveVm) -> anyhow::Result<()> {
        Ok(())
    }

    async fn after_recovery(&self, _vm: &WaveVm) -> anyhow::Result<()> {
        Ok(())
    }
}
