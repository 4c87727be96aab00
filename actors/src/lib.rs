//! Connection actors, the sharded registry and the protocol plug-ins.

pub mod config;
pub mod registry;

pub use config::{ConnectionFd, SessionConfig, SlowConsumerPolicy};
