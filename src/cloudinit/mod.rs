//! Cloud-init seed for each VM: user-data, meta-data, network-config, provision-generated SSH host keys, and the NoCloud ISO (label `cidata`).
