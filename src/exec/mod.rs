//! Runs a Plan: a DAG of idempotent steps, bounded parallelism, retries decided by error kind, events to the reporter.

pub mod phase2;
