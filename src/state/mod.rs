//! Workspace state: `.provision/state.json` under an exclusive lock, atomic writes, intent journal, secrets in 0600 files.
