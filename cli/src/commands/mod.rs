//! One module per command.

pub mod cancel;
pub mod compliance;
pub mod output;
pub mod prereq;
pub mod preview;
pub mod replay;
pub mod rollout;
pub mod run;
pub mod status;
pub mod sweep;
pub mod unmanaged;
