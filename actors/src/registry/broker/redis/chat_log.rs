//! The chat log in Redis: each operation is one Lua script ([`scripts`]), run on the shared
//! command connection from the chat owner's thread.

use std::sync::Arc;

use actix::Recipient;
use redis::{aio::MultiplexedConnection, Value};
use tokio::sync::mpsc;

use super::{link::Route, scripts, Command, RedisSettings, SharedConnection, Stats};
use crate::{
    registry::broker::{
        member_name, ChatFuture, ChatLog, ChatLogError, LogMember, RoomFeed, RoomLog, Saying,
    },
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
        let connection = self.current();
        let stats = self.stats.clone();
        Box::pin(async move {
            let mut conn = connection.ok_or(ChatLogError::Unavailable)?;
            let mut invocation = script.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            for arg in &args {
                invocation.arg(arg);
            }
            invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|err| failure(&stats, err))
        })
    }

    /// The command connection of the moment, if the broker is connected.
    fn current(&self) -> Option<MultiplexedConnection> {
        self.connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Counts a failed step and says whether the broker was unreachable or refused it.
fn failure(stats: &Stats, err: redis::RedisError) -> ChatLogError {
    stats.failed(&format!("chat: {err}"));
    if err.is_timeout() || err.is_io_error() || err.is_connection_dropped() {
        ChatLogError::Unavailable
    } else {
        ChatLogError::Broker(err.to_string())
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
    fn say(&self, messages: Vec<Saying>) -> ChatFuture<Vec<u64>> {
        let mut pipe = redis::pipe();
        pipe.load_script(&scripts::SAY).ignore();
        let epoch = crate::registry::broker::new_epoch();
        for message in &messages {
            let room = &message.room;
            let mut invocation = scripts::SAY.prepare_invoke();
            invocation
                .key(scripts::chat_meta(room))
                .key(scripts::chat_stream(room))
                .arg(&epoch)
                .arg(self.history)
                .arg(json(room))
                .arg(json(&message.nick))
                .arg(json(&message.text))
                .arg(message.ts)
                .arg(ROOM_TTL_MS)
                .arg(scripts::chat_channel(room));
            pipe.invoke_script(&invocation);
        }
        let connection = self.current();
        let stats = self.stats.clone();
        Box::pin(async move {
            let mut conn = connection.ok_or(ChatLogError::Unavailable)?;
            pipe.query_async(&mut conn)
                .await
                .map_err(|err| failure(&stats, err))
        })
    }

    fn join(
        &self,
        room: &str,
        conn: SessionId,
        nick: &str,
        user: Option<&str>,
    ) -> ChatFuture<Vec<String>> {
        let members = self.run::<(Vec<Vec<u8>>, Vec<Vec<u8>>)>(
            &scripts::JOIN,
            vec![
                scripts::chat_members(room),
                scripts::chat_users(room),
                scripts::node_rooms(&self.node),
            ],
            vec![
                member_name(&self.node, conn),
                nick.to_owned(),
                room.to_owned(),
                scripts::chat_channel(room),
                presence(room, "join", nick),
                ROOM_TTL_MS.to_string(),
                user.unwrap_or_default().to_owned(),
            ],
        );
        Box::pin(async move {
            let (members, users) = members.await?;
            Ok(nicks_in_join_order(members, users))
        })
    }

    fn leave(&self, room: &str, conn: SessionId) -> ChatFuture<()> {
        self.run(
            &scripts::LEAVE,
            vec![],
            vec![member_name(&self.node, conn), room.to_owned()],
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
                scripts::chat_users(room),
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

    fn resync(&self, members: Vec<LogMember>) -> ChatFuture<()> {
        let list: Vec<[String; 5]> = members
            .into_iter()
            .map(|member| {
                let event = presence(&member.room, "join", &member.nick);
                let user = member.user.as_deref().unwrap_or_default().to_owned();
                let name = member_name(&self.node, member.conn);
                [member.room, name, member.nick, event, user]
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

/// Members from `HGETALL` of the members (member → `SEQ NICK`) and of the users (member →
/// `sub`), in join order, a user once (where its first connection joined).
fn nicks_in_join_order(flat: Vec<Vec<u8>>, users: Vec<Vec<u8>>) -> Vec<String> {
    let users: std::collections::HashMap<&[u8], &[u8]> = users
        .chunks_exact(2)
        .map(|pair| (pair[0].as_slice(), pair[1].as_slice()))
        .collect();
    let mut members: Vec<(u64, Option<&[u8]>, String)> = flat
        .chunks_exact(2)
        .filter_map(|pair| {
            let entry = std::str::from_utf8(&pair[1]).ok()?;
            let (seq, nick) = entry.split_once(' ')?;
            let user = users.get(pair[0].as_slice()).copied();
            Some((seq.parse().ok()?, user, nick.to_owned()))
        })
        .collect();
    members.sort_by_key(|(seq, _, _)| *seq);
    let mut seen = std::collections::HashSet::new();
    members
        .into_iter()
        .filter(|(_, user, _)| user.is_none_or(|user| seen.insert(user)))
        .map(|(_, _, nick)| nick)
        .collect()
}

/// `{epoch, last id, XRANGE entries, HGETALL members, HGETALL users}` as the snapshot script returns it.
fn parse_snapshot(reply: Value) -> Option<RoomLog> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let [epoch, last_id, entries, members, users]: [Value; 5] = parts.try_into().ok()?;
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
    let users: Vec<Vec<u8>> = redis::from_redis_value(users).ok()?;
    Some(RoomLog {
        epoch,
        last_id,
        kept,
        members: nicks_in_join_order(members, users),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(pairs: &[(&str, &str)]) -> Vec<Vec<u8>> {
        pairs
            .iter()
            .flat_map(|(field, value)| [field.as_bytes().to_vec(), value.as_bytes().to_vec()])
            .collect()
    }

    #[test]
    fn members_come_in_join_order() {
        let members = flat(&[("n1/4", "3 cy"), ("n2/1", "1 ann"), ("n1/9", "2 bob smith")]);
        assert_eq!(
            nicks_in_join_order(members, Vec::new()),
            ["ann", "bob smith", "cy"]
        );
    }

    #[test]
    fn a_user_on_several_connections_is_listed_once() {
        let members = flat(&[
            ("n1/4", "3 Ann"),
            ("n2/1", "1 Ann"),
            ("n1/9", "2 bob"),
            ("n1/7", "4 Cy"),
        ]);
        let users = flat(&[("n1/4", "u-ann"), ("n2/1", "u-ann"), ("n1/7", "u-cy")]);
        assert_eq!(nicks_in_join_order(members, users), ["Ann", "bob", "Cy"]);
    }
}
