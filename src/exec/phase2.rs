//! Phase 2 runner: from running VMs to a converged K3s cluster over SSH.
