//! The process-wide directory of shards, filled as workers start.
//!
//! Written only while workers start; each worker keeps its own copy, refreshed when the count of
//! shards changes, so the message path (a broadcast to the other shards) takes no lock once the
//! workers are up.

use std::{
    cell::RefCell,
    sync::{
        atomic::{AtomicUsize, Ordering},
        RwLock,
    },
};

use actix::Addr;

use super::shard::Shard;

static SHARDS: RwLock<Vec<Addr<Shard>>> = RwLock::new(Vec::new());
/// How many shards have registered: a worker whose copy is shorter refreshes it.
static COUNT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static LOCAL_COPY: RefCell<Vec<Addr<Shard>>> = const { RefCell::new(Vec::new()) };
}

/// Adds a worker's shard; returns its index.
pub(super) fn register(shard: Addr<Shard>) -> usize {
    let mut shards = SHARDS
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    shards.push(shard);
    COUNT.store(shards.len(), Ordering::Release);
    shards.len() - 1
}

/// Calls `f` with every shard but `own`.
pub(super) fn for_each_other(own: usize, mut f: impl FnMut(&Addr<Shard>)) {
    LOCAL_COPY.with_borrow_mut(|shards| {
        if shards.len() != COUNT.load(Ordering::Acquire) {
            shards.clone_from(
                &SHARDS
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
        }
        for (index, shard) in shards.iter().enumerate() {
            if index != own {
                f(shard);
            }
        }
    });
}
