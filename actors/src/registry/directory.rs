//! The process-wide directory of shards, filled as workers start.

use std::sync::RwLock;

use actix::Addr;

use super::shard::Shard;

static SHARDS: RwLock<Vec<Addr<Shard>>> = RwLock::new(Vec::new());

/// Adds a worker's shard; returns its index.
pub(super) fn register(shard: Addr<Shard>) -> usize {
    let mut shards = SHARDS
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    shards.push(shard);
    shards.len() - 1
}

/// Calls `f` with every shard but `own`.
pub(super) fn for_each_other(own: usize, mut f: impl FnMut(&Addr<Shard>)) {
    let shards = SHARDS
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for (index, shard) in shards.iter().enumerate() {
        if index != own {
            f(shard);
        }
    }
}
