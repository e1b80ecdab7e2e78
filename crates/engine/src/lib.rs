//! Backup and restore engine: source listing, plan, closure copy, snapshots, verify.
