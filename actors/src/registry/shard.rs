//! One worker's shard: its connections, its groups, and the timers of its connections.

use std::{
    cell::{Cell, OnceCell, RefCell},
    collections::HashMap,
    future::Future,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::{Actor, AsyncContext, Context, Handler, Message as ActixMessage};
use indexmap::IndexMap;

use super::{broker::broker, directory, flush::Flush, GroupKey};
use crate::{
    close::CloseError,
    metrics::METRICS,
    outbox::{AfterClose, Delivery, Frame, Outbox, Wake},
    SessionConfig, SessionId,
};

type Members = IndexMap<SessionId, Rc<Outbox>>;

/// The state of one worker's shard, shared by the sessions of that worker (same thread).
pub struct ShardCore {
    index: usize,
    config: Arc<SessionConfig>,
    sessions: RefCell<Members>,
    groups: RefCell<HashMap<GroupKey, Members>>,
    flush: Rc<Flush>,
    /// Set by the first [`Drain`]: from then on a session that registers (its handshake was in
    /// progress, or came on a kept-alive connection, when the drain began) is closed with 1001
    /// at once. Without it such a session was never asked to leave, and the drain waited for it
    /// until the shutdown timeout.
    draining: Cell<bool>,
}

thread_local! {
    static LOCAL: OnceCell<Rc<ShardCore>> = const { OnceCell::new() };
}

/// Starts this worker's shard, once per thread: the app factory runs on every worker.
pub fn start_local_shard(config: Arc<SessionConfig>) {
    LOCAL.with(|local| {
        local.get_or_init(|| {
            let tick = watchdog_period(&config);
            let mut started = None;
            Shard::create(|ctx| {
                let core = Rc::new(ShardCore {
                    index: directory::register(ctx.address()),
                    sessions: RefCell::default(),
                    groups: RefCell::default(),
                    flush: Flush::new(config.write_coalesce),
                    draining: Cell::new(false),
                    config,
                });
                started = Some(core.clone());
                Shard { core, tick }
            });
            started.expect("Actor::create runs its closure before returning")
        });
    });
}

/// This worker's shard. Sessions are only created on workers, after their shard started.
pub fn local_shard() -> Rc<ShardCore> {
    LOCAL.with(|local| {
        local
            .get()
            .expect("the worker's shard is started by the app factory")
            .clone()
    })
}

/// Broadcasts from anywhere (any thread, no sending connection): one message to every shard,
/// this thread's included, each delivering to its local members (and, for a cluster group, to
/// the other nodes). Messages published from one thread reach every member in the order they
/// were published.
pub fn publish(key: &GroupKey, frame: Frame) {
    METRICS.broadcasts.inc();
    if key.is_cluster() {
        broker().publish(key, &frame);
    }
    deliver_from_broker(key, frame);
}

/// A broadcast that another node sent: to this node's members, on every shard.
pub(crate) fn deliver_from_broker(key: &GroupKey, frame: Frame) {
    directory::for_each_other(usize::MAX, |shard| {
        shard.do_send(RemoteBroadcast {
            key: key.clone(),
            frame: frame.clone(),
        })
    });
}

/// Like [`publish`], and reports how many members received the message, on all workers. The
/// message is queued to every shard when this is called (not when the future is first polled),
/// so it keeps its place among the caller's other publications.
pub fn publish_counted(key: &GroupKey, frame: Frame) -> impl Future<Output = usize> + 'static {
    METRICS.broadcasts.inc();
    if key.is_cluster() {
        broker().publish(key, &frame);
    }
    let mut replies = Vec::new();
    directory::for_each_other(usize::MAX, |shard| {
        replies.push(shard.send(CountedBroadcast {
            key: key.clone(),
            frame: frame.clone(),
        }))
    });
    async move {
        let mut reached = 0;
        for reply in replies {
            reached += reply.await.unwrap_or(0);
        }
        reached
    }
}

/// Starts closing every WebSocket on every worker with 1001 "going away" (graceful shutdown),
/// `batch` connections per worker every `period`, so that a server with 100k connections does
/// not make them all reconnect at the same instant.
pub fn drain_all(batch: usize, period: Duration) {
    directory::for_each_other(usize::MAX, |shard| shard.do_send(Drain { batch, period }));
}

/// Closes one connection, wherever it is, with this code and reason (the peer's close reply is
/// awaited, as when its protocol closes it). Resolves to whether a worker had it open.
pub fn close_session(
    id: SessionId,
    code: u16,
    reason: &str,
) -> impl Future<Output = bool> + 'static {
    let mut replies = Vec::new();
    directory::for_each_other(usize::MAX, |shard| {
        replies.push(shard.send(CloseSession {
            id,
            code,
            reason: reason.into(),
        }))
    });
    async move {
        let mut found = false;
        for reply in replies {
            found |= reply.await.unwrap_or(false);
        }
        found
    }
}

/// The members of a group on this node (every worker's).
pub fn group_size(key: &GroupKey) -> impl Future<Output = usize> + 'static {
    let mut replies = Vec::new();
    directory::for_each_other(usize::MAX, |shard| {
        replies.push(shard.send(GroupSize(key.clone())))
    });
    async move {
        let mut members = 0;
        for reply in replies {
            members += reply.await.unwrap_or(0);
        }
        members
    }
}

/// The watchdog runs often enough to honour the shortest timer with a little slack.
fn watchdog_period(config: &SessionConfig) -> Duration {
    let shortest = config
        .ping_interval
        .min(config.idle_timeout)
        .min(config.close_timeout);
    (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

impl ShardCore {
    pub fn register(&self, id: SessionId, outbox: &Rc<Outbox>) {
        self.sessions.borrow_mut().insert(id, outbox.clone());
        if self.draining.get() {
            outbox.close(&CloseError::GoingAway, AfterClose::AwaitPeer);
        }
    }

    pub fn unregister(&self, id: SessionId) {
        self.sessions.borrow_mut().swap_remove(&id);
    }

    /// Adds a member; the first member of a cluster group on this shard makes the node
    /// interested in the group's traffic from other nodes.
    pub fn join(&self, key: &GroupKey, id: SessionId, outbox: &Rc<Outbox>) {
        let first = {
            let mut groups = self.groups.borrow_mut();
            let members = groups.entry(key.clone()).or_default();
            let first = members.is_empty();
            members.insert(id, outbox.clone());
            first
        };
        if first && key.is_cluster() {
            broker().interest(key, true);
        }
    }

    pub fn leave(&self, key: &GroupKey, id: SessionId) {
        let emptied = {
            let mut groups = self.groups.borrow_mut();
            match groups.get_mut(key) {
                Some(members) => {
                    members.swap_remove(&id);
                    members.is_empty() && groups.remove(key).is_some()
                }
                None => false,
            }
        };
        if emptied && key.is_cluster() {
            broker().interest(key, false);
        }
    }

    /// Sends to every member of the group on every worker (and, for a cluster group, on every
    /// node); returns the members reached on this worker.
    pub fn broadcast(&self, key: &GroupKey, frame: Frame) -> usize {
        METRICS.broadcasts.inc();
        if key.is_cluster() {
            broker().publish(key, &frame);
        }
        directory::for_each_other(self.index, |shard| {
            shard.do_send(RemoteBroadcast {
                key: key.clone(),
                frame: frame.clone(),
            })
        });
        self.deliver_local(key, &frame)
    }

    /// Queues the frame (shared, not copied) for each local member of the group; the members'
    /// sockets are written by the flush pass (see `flush.rs`).
    fn deliver_local(&self, key: &GroupKey, frame: &Frame) -> usize {
        let groups = self.groups.borrow();
        let Some(members) = groups.get(key) else {
            return 0;
        };
        let reached = members
            .iter()
            .filter(|(id, outbox)| match outbox.send_deferred(frame.clone()) {
                (Delivery::Queued, Wake::Needed) => {
                    self.flush.add(**id, outbox);
                    true
                }
                (delivery, _) => delivery == Delivery::Queued,
            })
            .count();
        self.flush.count(reached);
        METRICS.broadcast_deliveries.add(reached as u64);
        reached
    }

    /// Queues 1001 "going away" to up to `count` sessions not yet closing; returns how many.
    fn close_some(&self, count: usize) -> usize {
        self.sessions
            .borrow()
            .values()
            .filter(|outbox| outbox.is_alive() && !outbox.is_closing())
            .take(count)
            .filter(|outbox| outbox.close(&CloseError::GoingAway, AfterClose::AwaitPeer))
            .count()
    }

    /// Keepalive pings, idle timeouts and close timeouts of this worker's connections. It runs
    /// on the shard's own timer, so a connection whose socket is stuck is still timed out.
    fn watchdog(&self, now: Instant) {
        let config = &self.config;
        for outbox in self.sessions.borrow().values() {
            if !outbox.is_alive() {
                continue;
            }
            if let Some(closing_since) = outbox.close_queued_at() {
                let waited = now.saturating_duration_since(closing_since);
                if waited >= config.close_timeout * 2 {
                    METRICS.sockets_killed.inc();
                    outbox.kill_socket();
                } else if waited >= config.close_timeout {
                    outbox.request_finish();
                }
            } else if now.saturating_duration_since(outbox.last_heard()) >= config.idle_timeout {
                outbox.close(&CloseError::IdleTimeout, AfterClose::AwaitPeer);
            } else if now.saturating_duration_since(outbox.last_ping()) >= config.ping_interval {
                outbox.ping(now);
            }
        }
    }
}

/// The actor of a shard: receives broadcasts from other workers and runs the watchdog.
pub struct Shard {
    core: Rc<ShardCore>,
    tick: Duration,
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.tick, |shard, _| shard.core.watchdog(Instant::now()));
    }
}

/// A broadcast whose sender wants to know how many members this shard reached.
#[derive(ActixMessage)]
#[rtype(result = "usize")]
struct CountedBroadcast {
    key: GroupKey,
    frame: Frame,
}

impl Handler<CountedBroadcast> for Shard {
    type Result = usize;

    fn handle(&mut self, message: CountedBroadcast, _: &mut Context<Self>) -> usize {
        self.core.deliver_local(&message.key, &message.frame)
    }
}

/// Close one session of this shard, if it is here.
#[derive(ActixMessage)]
#[rtype(result = "bool")]
struct CloseSession {
    id: SessionId,
    code: u16,
    reason: Box<str>,
}

impl Handler<CloseSession> for Shard {
    type Result = bool;

    fn handle(&mut self, message: CloseSession, _: &mut Context<Self>) -> bool {
        let sessions = self.core.sessions.borrow();
        let Some(outbox) = sessions.get(&message.id) else {
            return false;
        };
        if outbox.is_alive() && !outbox.is_closing() {
            outbox.close_with(Some((message.code, &message.reason)), AfterClose::AwaitPeer);
        }
        true
    }
}

/// How many members a group has on this shard.
#[derive(ActixMessage)]
#[rtype(result = "usize")]
struct GroupSize(GroupKey);

impl Handler<GroupSize> for Shard {
    type Result = usize;

    fn handle(&mut self, message: GroupSize, _: &mut Context<Self>) -> usize {
        self.core
            .groups
            .borrow()
            .get(&message.0)
            .map_or(0, IndexMap::len)
    }
}

/// Close this shard's sessions with 1001, in batches.
#[derive(ActixMessage)]
#[rtype(result = "()")]
struct Drain {
    batch: usize,
    period: Duration,
}

impl Handler<Drain> for Shard {
    type Result = ();

    fn handle(&mut self, drain: Drain, ctx: &mut Context<Self>) {
        self.core.draining.set(true);
        let closed = self.core.close_some(drain.batch.max(1));
        if closed > 0 {
            ctx.run_later(drain.period, move |_, ctx| {
                ctx.address().do_send(drain);
            });
        }
    }
}

/// A broadcast from another worker, delivered to this worker's members of the group.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub(super) struct RemoteBroadcast {
    key: GroupKey,
    frame: Frame,
}

impl Handler<RemoteBroadcast> for Shard {
    type Result = ();

    fn handle(&mut self, message: RemoteBroadcast, _: &mut Context<Self>) {
        self.core.deliver_local(&message.key, &message.frame);
    }
}
