//! Read-only observation of Proxmox (nodes, memory, storages, PCI devices, mappings, tagged VMs) and hosts.
