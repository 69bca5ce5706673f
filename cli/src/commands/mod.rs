//! One module per command.

pub mod prereq;
pub mod preview;
pub mod replay;
pub mod rollout;
pub mod status;
pub mod unmanaged;
