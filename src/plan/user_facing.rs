//! How a refused plan reaches the user: [`PlanError`] as a [`UserFacing`] error.

use super::PlanError;
use crate::error::UserFacing;
use crate::exit::ExitStatus;

/// A plan is refused before anything changes, for a reason in the profile, the credentials or
/// the Proxmox hosts the user controls; each message already says what to do.
impl UserFacing for PlanError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            PlanError::IommuOff { .. }
            | PlanError::SharedIommuGroup { .. }
            | PlanError::NotEnoughGpus { .. }
            | PlanError::RawPciNotAllowed { .. }
            | PlanError::UnknownMapping { .. }
            | PlanError::HugepagesDoNotFit { .. }
            | PlanError::CoresDoNotFit { .. }
            | PlanError::MissingTopology { .. }
            | PlanError::BadTopology { .. }
            | PlanError::NoNodeFits { .. }
            | PlanError::VmidRangeExhausted { .. }
            | PlanError::NotEnoughAddresses { .. }
            | PlanError::BadAddressRange { .. }
            | PlanError::AddressTaken { .. }
            | PlanError::AmbiguousTags { .. }
            | PlanError::ImageMissing { .. }
            | PlanError::TemplateMissing { .. }
            | PlanError::ForeignClusterVm { .. }
            | PlanError::StorageMissing { .. }
            | PlanError::StorageCannotLink { .. }
            | PlanError::MemoryDoesNotFit { .. }
            | PlanError::TooManyVcpus { .. }
            | PlanError::RootOnlyKeys { .. }
            | PlanError::EvenServerScaleDown { .. }
            | PlanError::SingleServerScaleDown { .. }
            | PlanError::K3sVersion(_)
            | PlanError::ReplaceUnknownNode { .. }
            | PlanError::ReplaceNotInProfile { .. }
            | PlanError::ReplacePendingChanges { .. }
            | PlanError::ReplaceInProgress { .. } => ExitStatus::UserError,
        }
    }

    /// The messages name the fix themselves.
    fn hint(&self) -> Option<String> {
        None
    }
}
