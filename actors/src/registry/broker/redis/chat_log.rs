//! The chat log in Redis: each operation is one Lua script ([`scripts`]), run on the shared
//! command connection from the chat owner's thread.

use std::sync::Arc;

use actix::Recipient;
use redis::{aio::MultiplexedConnection, Value};
use tokio::sync::mpsc;

use super::{link::Route, scripts, Command, RedisSettings, SharedConnection, Stats};
use crate::{
    registry::broker::{member_name, ChatFuture, ChatLog, ChatLogError, RoomFeed, RoomLog},
    SessionId,
};

/// How long a chat room's keys outlive its last activity, as on a single node.
const ROOM_TTL_MS: u64 = 300_000;

pub(super) struct RedisChatLog {
    node: String,
    history: usize,
    connection: SharedConnection,
    stats: Arc<Stats>,
    commands: mpsc::UnboundedSender<Command>,
}

impl RedisChatLog {
    pub(super) fn new(
        settings: &RedisSettings,
        connection: SharedConnection,
        stats: Arc<Stats>,
        commands: mpsc::UnboundedSender<Command>,
    ) -> RedisChatLog {
        RedisChatLog {
            node: settings.node_id.clone(),
            history: settings.history,
            connection,
            stats,
            commands,
        }
    }

    /// Runs a prepared script invocation on the current connection.
    fn run<T: redis::FromRedisValue + 'static>(
        &self,
        script: &'static redis::Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> ChatFuture<T> {
        let connection: Option<MultiplexedConnection> = self
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let stats = self.stats.clone();
        Box::pin(async move {
            let Some(mut conn) = connection else {
                return Err(ChatLogError::Unavailable);
            };
            let mut invocation = script.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            for arg in &args {
                invocation.arg(arg);
            }
            invocation.invoke_async(&mut conn).await.map_err(|err| {
                stats.failed(&format!("chat: {err}"));
                if err.is_timeout() || err.is_io_error() || err.is_connection_dropped() {
                    ChatLogError::Unavailable
                } else {
                    ChatLogError::Broker(err.to_string())
                }
            })
        })
    }
}

fn json(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serializes")
}

fn presence(room: &str, event: &str, nick: &str) -> String {
    format!(
        r#"{{"type":"presence","room":{},"event":"{event}","nick":{}}}"#,
        json(room),
        json(nick)
    )
}

impl ChatLog for RedisChatLog {
    fn say(&self, room: &str, nick: &str, text: &str, ts: u64) -> ChatFuture<u64> {
        self.run(
            &scripts::SAY,
            vec![scripts::chat_meta(room), scripts::chat_stream(room)],
            vec![
                crate::registry::broker::new_epoch(),
                self.history.to_string(),
                json(room),
                json(nick),
                json(text),
                ts.to_string(),
                ROOM_TTL_MS.to_string(),
                scripts::chat_channel(room),
            ],
        )
    }

    fn join(&self, room: &str, conn: SessionId, nick: &str) -> ChatFuture<Vec<String>> {
        let members = self.run::<Vec<Vec<u8>>>(
            &scripts::JOIN,
            vec![
                scripts::chat_meta(room),
                scripts::chat_members(room),
                scripts::node_rooms(&self.node),
            ],
            vec![
                member_name(&self.node, conn),
                nick.to_owned(),
                room.to_owned(),
                scripts::chat_channel(room),
                presence(room, "join", nick),
                ROOM_TTL_MS.to_string(),
            ],
        );
        Box::pin(async move { Ok(nicks_in_join_order(members.await?)) })
    }

    fn leave(&self, room: &str, conn: SessionId) -> ChatFuture<()> {
        self.run(
            &scripts::LEAVE,
            vec![scripts::chat_members(room)],
            vec![
                member_name(&self.node, conn),
                scripts::chat_channel(room),
                json(room),
            ],
        )
    }

    fn rename(&self, room: &str, conn: SessionId, old: &str, new: &str) -> ChatFuture<()> {
        let event = format!(
            r#"{{"type":"nick","room":{},"old":{},"new":{}}}"#,
            json(room),
            json(old),
            json(new)
        );
        self.run(
            &scripts::RENAME,
            vec![scripts::chat_members(room)],
            vec![
                member_name(&self.node, conn),
                new.to_owned(),
                scripts::chat_channel(room),
                event,
            ],
        )
    }

    fn snapshot(&self, room: &str) -> ChatFuture<RoomLog> {
        let reply = self.run::<Value>(
            &scripts::SNAPSHOT,
            vec![
                scripts::chat_meta(room),
                scripts::chat_stream(room),
                scripts::chat_members(room),
            ],
            vec![
                crate::registry::broker::new_epoch(),
                ROOM_TTL_MS.to_string(),
            ],
        );
        Box::pin(async move {
            let reply = reply.await?;
            parse_snapshot(reply).ok_or_else(|| {
                ChatLogError::Broker("unexpected reply to a room snapshot".to_owned())
            })
        })
    }

    fn resync(&self, members: Vec<(String, SessionId, String)>) -> ChatFuture<()> {
        let list: Vec<[String; 4]> = members
            .into_iter()
            .map(|(room, conn, nick)| {
                let event = presence(&room, "join", &nick);
                [room, member_name(&self.node, conn), nick, event]
            })
            .collect();
        let list = serde_json::to_string(&list).expect("strings always serialize");
        self.run(&scripts::RESYNC, vec![], vec![self.node.clone(), list])
    }

    fn keep(&self, rooms: Vec<String>) -> ChatFuture<()> {
        let mut args = vec![ROOM_TTL_MS.to_string()];
        args.extend(rooms);
        self.run(&scripts::KEEP, vec![], args)
    }

    fn watch(&self, room: &str, to: Option<Recipient<RoomFeed>>) {
        let _ = self.commands.send(Command::Interest {
            channel: scripts::chat_channel(room),
            route: to.map(|to| Route::Chat {
                room: room.to_owned(),
                to,
            }),
        });
    }
}

/// Members from `HGETALL` (member → `SEQ NICK`), in join order.
fn nicks_in_join_order(flat: Vec<Vec<u8>>) -> Vec<String> {
    let mut members: Vec<(u64, String)> = flat
        .chunks_exact(2)
        .filter_map(|pair| {
            let entry = std::str::from_utf8(&pair[1]).ok()?;
            let (seq, nick) = entry.split_once(' ')?;
            Some((seq.parse().ok()?, nick.to_owned()))
        })
        .collect();
    members.sort_by_key(|(seq, _)| *seq);
    members.into_iter().map(|(_, nick)| nick).collect()
}

/// `{epoch, last id, XRANGE entries, HGETALL members}` as the snapshot script returns it.
fn parse_snapshot(reply: Value) -> Option<RoomLog> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let [epoch, last_id, entries, members]: [Value; 4] = parts.try_into().ok()?;
    let epoch: String = redis::from_redis_value(epoch).ok()?;
    let last_id: u64 = redis::from_redis_value(last_id).ok()?;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::from_redis_value(entries).ok()?;
    let kept = entries
        .into_iter()
        .filter_map(|(id, fields)| {
            let id = id.split_once('-')?.0.parse().ok()?;
            let (_, event) = fields.into_iter().find(|(field, _)| field == "e")?;
            Some((id, event.into()))
        })
        .collect();
    let members: Vec<Vec<u8>> = redis::from_redis_value(members).ok()?;
    Some(RoomLog {
        epoch,
        last_id,
        kept,
        members: nicks_in_join_order(members),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_come_in_join_order() {
        let flat = [("n1/4", "3 cy"), ("n2/1", "1 ann"), ("n1/9", "2 bob smith")]
            .iter()
            .flat_map(|(field, value)| [field.as_bytes().to_vec(), value.as_bytes().to_vec()])
            .collect();
        assert_eq!(nicks_in_join_order(flat), ["ann", "bob smith", "cy"]);
    }
}
