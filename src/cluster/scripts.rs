//! The Lua scripts that keep cluster-wide presence in Redis. Each runs atomically, so a
//! cluster transition (a user's first socket anywhere, its last socket anywhere, a dead
//! node's users) is decided once, by one script, and its event is published by that same
//! script: every node hears member events in the one order Redis ran them.
//!
//! Keys (`P` is the cluster prefix, `A` the app id, `C` the channel, `N` a node id):
//! - `P:nodes`: the node ids that ever registered (cleaned up with their node);
//! - `P:node:N:alive`: the node's lease, a few seconds long, refreshed every second;
//! - `P:node:N:presence`: what the node registered, as `A\nC\nU` entries;
//! - `P:node:N:online`, `P:A:online`: users signed in on the node (`A\nU`); how many nodes
//!   each user is signed in on (watchlist online/offline, published as `W1+`/`W1-` on
//!   `P:A:#watch:U`);
//! - `P:node:N:subs`: the node's subscription count per `A\nC` (for the HTTP API);
//! - `P:node:N:conns`: the node's connection count per app (for `max_connections`);
//! - `P:A:presence:C:info`: user id to `user_info` (the cluster's member list);
//! - `P:A:presence:C:n`: user id to how many nodes have a socket of that user;
//! - `P:A:presence:C:v`: the channel's presence version, one more per member event.
//!
//! Member events are published on the channel's pub/sub channel `P:A:C` as
//! `P1+VERSION:LEN:USER_ID{user_info}` and `P1-VERSION:LEN:USER_ID` (see `wire`).

/// Registers a user's first socket on this node. KEYS: info, n, node set, version.
/// ARGV: entry, user id, user_info (may be empty), max members (0: none), pub/sub channel.
/// Returns 1 (member), 0 (the channel is full).
pub const JOIN: &str = r#"
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return 1 end
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
if n == 1 then
  local max = tonumber(ARGV[4])
  if max > 0 and redis.call('HLEN', KEYS[1]) >= max then
    redis.call('HDEL', KEYS[2], ARGV[2])
    redis.call('SREM', KEYS[3], ARGV[1])
    return 0
  end
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  local v = redis.call('INCR', KEYS[4])
  redis.call('PUBLISH', ARGV[5], 'P1+' .. v .. ':' .. string.len(ARGV[2]) .. ':' .. ARGV[2] .. ARGV[3])
end
return 1
"#;

/// Unregisters a user's last socket on this node. KEYS and ARGV as for [`JOIN`], without
/// user_info and max: ARGV entry, user id, pub/sub channel.
pub const LEAVE: &str = r#"
if redis.call('SREM', KEYS[3], ARGV[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[1], ARGV[2])
  local v = redis.call('INCR', KEYS[4])
  redis.call('PUBLISH', ARGV[3], 'P1-' .. v .. ':' .. string.len(ARGV[2]) .. ':' .. ARGV[2])
end
return 1
"#;

/// A user's first socket on this node signed in. KEYS: online hash `P:A:online`, node set
/// `P:node:N:online`. ARGV: entry `A\nU`, user id, pub/sub channel `P:A:#watch:U`.
pub const SIGNED_IN: &str = r#"
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[1], ARGV[2], 1) == 1 then
  redis.call('PUBLISH', ARGV[3], 'W1+')
end
return 1
"#;

/// A user's last socket on this node signed out. KEYS and ARGV as for [`SIGNED_IN`].
pub const SIGNED_OUT: &str = r#"
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[1], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('PUBLISH', ARGV[3], 'W1-')
end
return 1
"#;

/// The member list and the version it is at. KEYS: info, version.
/// Returns `{version, user1, info1, user2, info2, …}`.
pub const SNAPSHOT: &str = r#"
local v = tonumber(redis.call('GET', KEYS[2]) or '0')
local out = {v}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do out[#out + 1] = all[i] end
return out
"#;

/// Removes everything node N registered, announcing the users it was the last node of.
/// Skipped while N's lease lives, unless forced (a node cleaning up after itself).
/// ARGV: prefix, node id, force (1/0). Returns how many entries were removed.
pub const CLEANUP: &str = r#"
local p, node = ARGV[1], ARGV[2]
if ARGV[3] ~= '1' and redis.call('EXISTS', p .. ':node:' .. node .. ':alive') == 1 then
  return -1
end
local set = p .. ':node:' .. node .. ':presence'
local entries = redis.call('SMEMBERS', set)
for _, e in ipairs(entries) do
  local a, c, u = string.match(e, '^([^\n]*)\n([^\n]*)\n(.*)$')
  if a then
    local base = p .. ':' .. a .. ':presence:' .. c
    local n = redis.call('HINCRBY', base .. ':n', u, -1)
    if n <= 0 then
      redis.call('HDEL', base .. ':n', u)
      redis.call('HDEL', base .. ':info', u)
      local v = redis.call('INCR', base .. ':v')
      redis.call('PUBLISH', p .. ':' .. a .. ':' .. c, 'P1-' .. v .. ':' .. string.len(u) .. ':' .. u)
    end
  end
end
redis.call('DEL', set)
local online = p .. ':node:' .. node .. ':online'
local signed = redis.call('SMEMBERS', online)
for _, e in ipairs(signed) do
  local a, u = string.match(e, '^([^\n]*)\n(.*)$')
  if a and redis.call('HINCRBY', p .. ':' .. a .. ':online', u, -1) <= 0 then
    redis.call('HDEL', p .. ':' .. a .. ':online', u)
    redis.call('PUBLISH', p .. ':' .. a .. ':#watch:' .. u, 'W1-')
  end
end
redis.call('DEL', online)
redis.call('DEL', p .. ':node:' .. node .. ':subs')
redis.call('DEL', p .. ':node:' .. node .. ':conns')
if ARGV[3] ~= '1' then redis.call('SREM', p .. ':nodes', node) end
return #entries + #signed
"#;
