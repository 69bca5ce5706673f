//! One module per command.

pub mod compliance;
pub mod prereq;
pub mod preview;
pub mod replay;
pub mod rollout;
pub mod status;
pub mod sweep;
pub mod unmanaged;
