//! The sharded registry: one shard per worker thread.

use std::sync::Arc;

use crate::SessionConfig;

/// Starts this worker's shard (once per thread).
pub fn start_local_shard(_config: Arc<SessionConfig>) {}
