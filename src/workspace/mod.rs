//! The workspace directory: `provision.toml` (Proxmox endpoint and credentials by reference), `.provision/`, `.gitignore`.
