//! Integration tests: one binary.

mod support {
    pub mod testbed;
}

mod k3s;
mod nodeprep;
mod phase2;
mod ssh;
mod testbed;
