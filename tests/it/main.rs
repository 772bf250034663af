//! Integration tests: one binary.
mod cloudinit;
