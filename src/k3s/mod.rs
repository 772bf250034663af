//! K3s HA install: binary fetch and verification, config.yaml, systemd units, join order, manifests (NVIDIA, storage, GitOps), kubeconfig.
