//! The broker's keys and channels, and the Lua scripts that change them. Each script is one
//! atomic step in Redis, so no two nodes can interleave inside it (two says never get one id).
//!
//! Keys (every name starts with `sb:`):
//! - `sb:g:PROTOCOL:ROOM` (channel): broadcasts of a cluster-scoped group;
//! - `sb:c:ROOM` (channel): a chat room's events; `sb:c:ROOM:meta` (hash: `epoch`, `id`, `mseq`),
//!   `sb:c:ROOM:stream` (the kept messages, entry id `ID-1`), `sb:c:ROOM:members` (hash:
//!   `node/conn` → `SEQ NICK`, SEQ giving the join order), `sb:c:ROOM:users` (hash:
//!   `node/conn` → token `sub`, for connections with a token: the connections of one user are
//!   one member in presence, on whichever nodes they are);
//! - `sb:nodes` (set of live nodes), `sb:node:NODE` (expires unless the node refreshes it),
//!   `sb:n:NODE:rooms` (rooms where NODE has or had members);
//! - `sb:probe:NODE` (channel): the node's own end-to-end check of its subscription.
//!
//! On a chat channel, a message travels as `m<id> <epoch> <event JSON>`, a member's join as
//! `j<node/conn> <event JSON>` (its node answers the joiner after it; the event is empty when
//! the joiner's user was in the room already), any other event as `e<event JSON>`.

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

pub fn chat_users(room: &str) -> String {
    format!("sb:c:{room}:users")
}

pub fn node_rooms(node: &str) -> String {
    format!("sb:n:{node}:rooms")
}

pub fn probe_channel(node: &str) -> String {
    format!("sb:probe:{node}")
}

/// Lua: members of a room. `add_member` adds a connection and returns whether that is a new
/// member in presence (not another connection of a user already in the room); `drop_member`
/// removes one and returns its nick if its member is gone with it (a presence `leave` is due).
const PRESENCE: &str = r#"
local function user_present(room, sub, member)
  local all = redis.call('HGETALL', 'sb:c:' .. room .. ':users')
  for i = 1, #all, 2 do
    if all[i] ~= member and all[i + 1] == sub then return true end
  end
  return false
end
local function add_member(room, member, nick, sub)
  local seq = redis.call('HINCRBY', 'sb:c:' .. room .. ':meta', 'mseq', 1)
  redis.call('HSET', 'sb:c:' .. room .. ':members', member, seq .. ' ' .. nick)
  if sub == '' then return true end
  local present = user_present(room, sub, member)
  redis.call('HSET', 'sb:c:' .. room .. ':users', member, sub)
  return not present
end
local function drop_member(room, member)
  local key = 'sb:c:' .. room .. ':members'
  local current = redis.call('HGET', key, member)
  if not current then return nil end
  redis.call('HDEL', key, member)
  local users = 'sb:c:' .. room .. ':users'
  local sub = redis.call('HGET', users, member)
  if sub then
    redis.call('HDEL', users, member)
    if user_present(room, sub, member) then return nil end
  end
  return string.match(current, '^%d+ (.*)$') or current
end
local function announce_leave(room, nick)
  redis.call('PUBLISH', 'sb:c:' .. room, 'e{"type":"presence","room":' .. cjson.encode(room)
    .. ',"event":"leave","nick":' .. cjson.encode(nick) .. '}')
end
"#;

/// Lua: removes the chat members of `node` that `keep` does not list (keys `room \0 member`),
/// with a presence `leave` event where a member is gone; then `reap`, which removes them all
/// and forgets the node. Shared by the heartbeat, retirement and resync.
const MEMBERS: &str = r#"
local function remove_members(node, keep)
  local prefix = node .. '/'
  for _, room in ipairs(redis.call('SMEMBERS', 'sb:n:' .. node .. ':rooms')) do
    local all = redis.call('HKEYS', 'sb:c:' .. room .. ':members')
    for _, member in ipairs(all) do
      if string.sub(member, 1, #prefix) == prefix and not keep[room .. '\0' .. member] then
        local nick = drop_member(room, member)
        if nick then announce_leave(room, nick) end
      end
    end
  end
end
local function reap(dead)
  redis.call('SREM', 'sb:nodes', dead)
  remove_members(dead, {})
  redis.call('DEL', 'sb:n:' .. dead .. ':rooms')
end
"#;

/// Lua: the room's epoch, starting the room over (new epoch, no messages) if the log has none.
const ROOM_EPOCH: &str = r#"
local function room_epoch(meta, stream, fresh)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = fresh
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'epoch', epoch, 'id', 0)
  end
  return epoch
end
"#;

/// ARGV: node, ttl (ms), reap (`1` or `0`). Marks the node alive for `ttl`, then, if `reap`,
/// reaps every node whose mark has expired. Returns how many were reaped.
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{PRESENCE}{MEMBERS}
redis.call('SET', 'sb:node:' .. ARGV[1], '1', 'PX', ARGV[2])
redis.call('SADD', 'sb:nodes', ARGV[1])
local reaped = 0
if ARGV[3] ~= '1' then return 0 end
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
        r#"{PRESENCE}{MEMBERS}
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
    Script::new(&format!(
        r#"{ROOM_EPOCH}
local epoch = room_epoch(KEYS[1], KEYS[2], ARGV[1])
local id = redis.call('HINCRBY', KEYS[1], 'id', 1)
local event = '{{"type":"message","room":' .. ARGV[3] .. ',"id":' .. id .. ',"epoch":"' .. epoch
  .. '","ts":' .. ARGV[6] .. ',"nick":' .. ARGV[4] .. ',"text":' .. ARGV[5] .. '}}'
local history = tonumber(ARGV[2])
if history > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', history, id .. '-1', 'e', event)
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PUBLISH', ARGV[8], 'm' .. id .. ' ' .. epoch .. ' ' .. event)
return id
"#
    ))
});

/// KEYS: meta, stream, members, users. ARGV: epoch for a new room, ttl (ms). The room as it is
/// (made with that epoch if the log has no such room): {epoch, last id, kept entries, members,
/// users}.
pub static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{ROOM_EPOCH}
local epoch = room_epoch(KEYS[1], KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
redis.call('PEXPIRE', KEYS[4], ARGV[2])
return {{epoch, redis.call('HGET', KEYS[1], 'id'), redis.call('XRANGE', KEYS[2], '-', '+'),
  redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4])}}
"#
    ))
});

/// KEYS: members, users, node rooms. ARGV: member, nick, room, channel, presence event, ttl,
/// user (`sub`, empty without a token). Adds the member and announces it (the presence event
/// only if it is a new member); returns the members and users (two HGETALLs).
pub static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{PRESENCE}
local new = add_member(ARGV[3], ARGV[1], ARGV[2], ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('SADD', KEYS[3], ARGV[3])
local event = ''
if new then event = ARGV[5] end
redis.call('PUBLISH', ARGV[4], 'j' .. ARGV[1] .. ' ' .. event)
return {{redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}}
"#
    ))
});

/// ARGV: member, room. Removes the member and, if its member in presence is gone with it,
/// announces that under the nick the log has for it.
pub static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{PRESENCE}
local nick = drop_member(ARGV[2], ARGV[1])
if nick then announce_leave(ARGV[2], nick) end
return 0
"#
    ))
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

/// ARGV: node, JSON list of [room, member, nick, presence join event, user]. Makes the node's
/// members in the log exactly that list: members the log has but the node no longer has leave
/// (with a presence event), members the log lost (an outage, a restarted Redis) join again.
pub static RESYNC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{PRESENCE}{MEMBERS}
local node = ARGV[1]
local want = cjson.decode(ARGV[2])
local keep = {{}}
for _, m in ipairs(want) do keep[m[1] .. '\0' .. m[2]] = true end
remove_members(node, keep)
for _, m in ipairs(want) do
  local key = 'sb:c:' .. m[1] .. ':members'
  if redis.call('HEXISTS', key, m[2]) == 0 then
    redis.call('SADD', 'sb:n:' .. node .. ':rooms', m[1])
    if add_member(m[1], m[2], m[3], m[5]) then
      redis.call('PUBLISH', 'sb:c:' .. m[1], 'e' .. m[4])
    end
  end
end
return 0
"#
    ))
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
  redis.call('PEXPIRE', room .. ':users', ARGV[1])
end
return 0
"#,
    )
});
