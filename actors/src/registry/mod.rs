//! The sharded registry: one shard per worker thread.
//!
//! A connection registers in the shard of the worker that owns it. A broadcast reaches the local
//! members directly and crosses to each other shard once, carrying one shared payload. Messages
//! from one sender cross through one mailbox per shard, so every receiver sees them in order.
//! Groups of cluster-scoped protocols also reach the other nodes, through the [`broker`].

pub mod broker;
mod directory;
mod flush;
mod group;
mod shard;

pub use group::GroupKey;
pub(crate) use shard::deliver_from_broker;
pub use shard::{
    close_session, drain_all, group_size, local_shard, publish, publish_counted, start_local_shard,
    ShardCore,
};
