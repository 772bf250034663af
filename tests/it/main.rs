//! Integration tests: one binary.

mod k3s;
mod nodeprep;
mod phase2;
