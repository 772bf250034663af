//! Retry decided by the error: every [`PveError`] variant is matched by name.

use crate::pve::PveError;

/// What to do after a step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run the step again after a backoff. Steps re-read Proxmox before acting, so this is safe
    /// even when the failed request may have been applied.
    Retry,
    /// Give up: retrying cannot help (credentials, bad parameters, missing objects).
    Fail,
}

/// Proxmox answers a create for a taken VMID with this text.
pub fn is_already_exists(error: &PveError) -> bool {
    match error {
        PveError::BadRequest {
            message, errors, ..
        } => {
            message.contains("already exists")
                || errors.values().any(|e| e.contains("already exists"))
        }
        PveError::Server { message, .. }
        | PveError::TaskFailed {
            exitstatus: message,
            ..
        } => message.contains("already exists"),
        PveError::NeverSent { .. }
        | PveError::OutcomeUnknown { .. }
        | PveError::FingerprintMismatch { .. }
        | PveError::Unauthorized { .. }
        | PveError::Forbidden { .. }
        | PveError::NotFound { .. }
        | PveError::LockTimeout { .. }
        | PveError::Timeout { .. }
        | PveError::Decode { .. }
        | PveError::Config { .. } => false,
    }
}

pub fn decide(error: &PveError) -> Decision {
    match error {
        // Never reached the server: safe even for a POST.
        PveError::NeverSent { .. } => Decision::Retry,
        // Maybe applied: the step re-reads state before acting again.
        PveError::OutcomeUnknown { .. } => Decision::Retry,
        PveError::LockTimeout { .. } => Decision::Retry,
        PveError::Server { .. } => Decision::Retry,
        // A failed task (including a lock timeout inside it) is re-checked and re-run.
        PveError::TaskFailed { .. } => Decision::Retry,
        PveError::Timeout { .. } => Decision::Retry,
        // "already exists" means: re-read, adopt or fail there — never a second VM.
        PveError::BadRequest { .. } if is_already_exists(error) => Decision::Retry,
        PveError::BadRequest { .. } => Decision::Fail,
        PveError::FingerprintMismatch { .. }
        | PveError::Unauthorized { .. }
        | PveError::Forbidden { .. }
        | PveError::NotFound { .. }
        | PveError::Decode { .. }
        | PveError::Config { .. } => Decision::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_by_variant() {
        let lock = PveError::LockTimeout {
            path: "/nodes/pve1/qemu".into(),
            message: "can't lock file".into(),
        };
        assert_eq!(decide(&lock), Decision::Retry);
        let exists = PveError::BadRequest {
            method: "POST".into(),
            path: "/nodes/pve1/qemu".into(),
            message: "VM 7101 already exists on node 'pve2'".into(),
            errors: Default::default(),
        };
        assert_eq!(decide(&exists), Decision::Retry);
        let bad = PveError::BadRequest {
            method: "POST".into(),
            path: "/nodes/pve1/qemu".into(),
            message: "invalid".into(),
            errors: [("memory".to_owned(), "value too low".to_owned())].into(),
        };
        assert_eq!(decide(&bad), Decision::Fail);
        let forbidden = PveError::Forbidden {
            method: "POST".into(),
            path: "/".into(),
            message: "no".into(),
        };
        assert_eq!(decide(&forbidden), Decision::Fail);
    }
}
