//! No broker: this node is the whole server, so nothing ever needs to leave it.

use std::sync::Arc;

use super::{Broker, BrokerStatus, ChatLog, GroupKey};
use crate::outbox::Frame;

/// The single-node broker: every member of every group is on this node.
pub struct Local;

impl Broker for Local {
    fn publish(&self, _: &GroupKey, _: &Frame) {}

    fn interest(&self, _: &GroupKey, _: bool) {}

    fn chat(&self) -> Option<Arc<dyn ChatLog>> {
        None
    }

    fn status(&self) -> Option<BrokerStatus> {
        None
    }

    fn ready(&self) -> bool {
        true
    }

    fn retire(&self, _: std::time::Duration) {}
}
