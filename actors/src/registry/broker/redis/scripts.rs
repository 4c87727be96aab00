//! The broker's keys and channels, and the Lua scripts that change them. Each script is one
//! atomic step in Redis, so no two nodes can interleave inside it (two says never get one id).
//!
//! Keys (every name starts with `sb:`):
//! - `sb:g:PROTOCOL:ROOM` (channel): broadcasts of a cluster-scoped group;
//! - `sb:c:ROOM` (channel): a chat room's events; `sb:c:ROOM:meta` (hash: `epoch`, `id`, `mseq`),
//!   `sb:c:ROOM:stream` (the kept messages, entry id `ID-1`), `sb:c:ROOM:members` (hash:
//!   `node/conn` → `SEQ NICK`, SEQ giving the join order);
//! - `sb:nodes` (set of live nodes), `sb:node:NODE` (expires unless the node refreshes it),
//!   `sb:n:NODE:rooms` (rooms where NODE has or had members);
//! - `sb:probe:NODE` (channel): the node's own end-to-end check of its subscription.
//!
//! On a chat channel, a message travels as `m<id> <epoch> <event JSON>`, a member's join as
//! `j<node/conn> <event JSON>` (its node answers the joiner after it), any other event as
//! `e<event JSON>`.

use std::sync::LazyLock;

use redis::Script;

pub fn group_channel(protocol: &str, room: &str) -> String {
    format!("sb:g:{protocol}:{room}")
}

pub fn chat_channel(room: &str) -> String {
    format!("sb:c:{room}")
}

pub fn chat_meta(room: &str) -> String {
    format!("sb:c:{room}:meta")
}

pub fn chat_stream(room: &str) -> String {
    format!("sb:c:{room}:stream")
}

pub fn chat_members(room: &str) -> String {
    format!("sb:c:{room}:members")
}

pub fn node_rooms(node: &str) -> String {
    format!("sb:n:{node}:rooms")
}

pub fn probe_channel(node: &str) -> String {
    format!("sb:probe:{node}")
}

/// Lua: removes every chat member of node `dead` from its rooms, with a presence `leave` event
/// in each, and forgets the node. Returns nothing; shared by the heartbeat and retirement.
const REAP: &str = r#"
local function reap(dead)
  redis.call('SREM', 'sb:nodes', dead)
  local rooms_key = 'sb:n:' .. dead .. ':rooms'
  local prefix = dead .. '/'
  for _, room in ipairs(redis.call('SMEMBERS', rooms_key)) do
    local key = 'sb:c:' .. room .. ':members'
    local all = redis.call('HGETALL', key)
    for i = 1, #all, 2 do
      if string.sub(all[i], 1, #prefix) == prefix then
        redis.call('HDEL', key, all[i])
        local nick = string.match(all[i + 1], '^%d+ (.*)$') or all[i + 1]
        redis.call('PUBLISH', 'sb:c:' .. room, 'e{"type":"presence","room":' .. cjson.encode(room)
          .. ',"event":"leave","nick":' .. cjson.encode(nick) .. '}')
      end
    end
  end
  redis.call('DEL', rooms_key)
end
"#;

/// ARGV: node, ttl (ms). Marks the node alive for `ttl`, then reaps every node whose mark has
/// expired. Returns how many were reaped.
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{REAP}
redis.call('SET', 'sb:node:' .. ARGV[1], '1', 'PX', ARGV[2])
redis.call('SADD', 'sb:nodes', ARGV[1])
local reaped = 0
for _, other in ipairs(redis.call('SMEMBERS', 'sb:nodes')) do
  if redis.call('EXISTS', 'sb:node:' .. other) == 0 then
    reap(other)
    reaped = reaped + 1
  end
end
return reaped
"#
    ))
});

/// ARGV: node. The node is stopping: its members leave now.
pub static RETIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{REAP}
reap(ARGV[1])
redis.call('DEL', 'sb:node:' .. ARGV[1])
return 0
"#
    ))
});

/// KEYS: meta, stream. ARGV: epoch for a new room, history, room (JSON), nick (JSON), text
/// (JSON), ts, ttl (ms), channel. Stamps the next id, keeps the message (the stream trimmed to
/// `history`), publishes it. The event is built here so that its id and epoch are the log's;
/// it has the field order of `wire::Event::Message`. Returns the id.
pub static SAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'id', 0)
end
local id = redis.call('HINCRBY', KEYS[1], 'id', 1)
local event = '{"type":"message","room":' .. ARGV[3] .. ',"id":' .. id .. ',"epoch":"' .. epoch
  .. '","ts":' .. ARGV[6] .. ',"nick":' .. ARGV[4] .. ',"text":' .. ARGV[5] .. '}'
local history = tonumber(ARGV[2])
if history > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', history, id .. '-1', 'e', event)
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PUBLISH', ARGV[8], 'm' .. id .. ' ' .. epoch .. ' ' .. event)
return id
"#,
    )
});

/// KEYS: meta, stream, members. ARGV: epoch for a new room, ttl (ms). The room as it is (made
/// with that epoch if the log has no such room): {epoch, last id, kept entries, members}.
pub static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'id', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {epoch, redis.call('HGET', KEYS[1], 'id'), redis.call('XRANGE', KEYS[2], '-', '+'),
  redis.call('HGETALL', KEYS[3])}
"#,
    )
});

/// KEYS: meta, members, node rooms. ARGV: member, nick, room, channel, presence event, ttl.
/// Adds the member and announces it; returns the members (HGETALL).
pub static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local seq = redis.call('HINCRBY', KEYS[1], 'mseq', 1)
redis.call('HSET', KEYS[2], ARGV[1], seq .. ' ' .. ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('PUBLISH', ARGV[4], 'j' .. ARGV[1] .. ' ' .. ARGV[5])
return redis.call('HGETALL', KEYS[2])
"#,
    )
});

/// KEYS: members. ARGV: member, channel, room (JSON). Removes the member and, if it was one,
/// announces it under the nick the log has for it.
pub static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  redis.call('HDEL', KEYS[1], ARGV[1])
  local nick = string.match(current, '^%d+ (.*)$') or current
  redis.call('PUBLISH', ARGV[2], 'e{"type":"presence","room":' .. ARGV[3]
    .. ',"event":"leave","nick":' .. cjson.encode(nick) .. '}')
end
return 0
"#,
    )
});

/// KEYS: members. ARGV: member, new nick, channel, nick event. Renames a member (keeping its
/// place in the join order) and announces it.
pub static RENAME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local seq = string.match(current, '^(%d+) ') or '0'
  redis.call('HSET', KEYS[1], ARGV[1], seq .. ' ' .. ARGV[2])
  redis.call('PUBLISH', ARGV[3], 'e' .. ARGV[4])
end
return 0
"#,
    )
});

/// ARGV: node, JSON list of [room, member, nick, presence join event]. Makes the node's members
/// in the log exactly that list: members the log has but the node no longer has leave (with a
/// presence event), members the log lost (an outage, a restarted Redis) join again.
pub static RESYNC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local node = ARGV[1]
local want = cjson.decode(ARGV[2])
local keep = {}
for _, m in ipairs(want) do keep[m[1] .. '\0' .. m[2]] = true end
local rooms_key = 'sb:n:' .. node .. ':rooms'
local prefix = node .. '/'
for _, room in ipairs(redis.call('SMEMBERS', rooms_key)) do
  local key = 'sb:c:' .. room .. ':members'
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, #prefix) == prefix and not keep[room .. '\0' .. all[i]] then
      redis.call('HDEL', key, all[i])
      local nick = string.match(all[i + 1], '^%d+ (.*)$') or all[i + 1]
      redis.call('PUBLISH', 'sb:c:' .. room, 'e{"type":"presence","room":' .. cjson.encode(room)
        .. ',"event":"leave","nick":' .. cjson.encode(nick) .. '}')
    end
  end
end
for _, m in ipairs(want) do
  local key = 'sb:c:' .. m[1] .. ':members'
  if redis.call('HEXISTS', key, m[2]) == 0 then
    local seq = redis.call('HINCRBY', 'sb:c:' .. m[1] .. ':meta', 'mseq', 1)
    redis.call('HSET', key, m[2], seq .. ' ' .. m[3])
    redis.call('SADD', rooms_key, m[1])
    redis.call('PUBLISH', 'sb:c:' .. m[1], 'e' .. m[4])
  end
end
return 0
"#,
    )
});

/// ARGV: ttl (ms), rooms. Keeps each room's keys for another `ttl`.
pub static KEEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
for i = 2, #ARGV do
  local room = 'sb:c:' .. ARGV[i]
  redis.call('PEXPIRE', room .. ':meta', ARGV[1])
  redis.call('PEXPIRE', room .. ':stream', ARGV[1])
  redis.call('PEXPIRE', room .. ':members', ARGV[1])
end
return 0
"#,
    )
});
