//! saferoot's command line, mount lifecycle and sandbox. The filesystem is in `saferoot-fuse`,
//! the store (trash, journal, restore) in `saferoot-snapshots`.

pub mod audit;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod denials_cmd;
pub mod doctor_cmd;
pub mod gc_cmd;
pub mod history_cmd;
pub mod mounts;
pub mod policy;
pub mod profile;
pub mod progress_bar;
pub mod run;
pub mod sandbox;
pub mod seccomp;
pub mod snapshot_cmd;
