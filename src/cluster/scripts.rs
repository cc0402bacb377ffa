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
//!
//! Webhooks (see `crate::webhooks::queue`): the same scripts that decide a cluster transition
//! queue its webhook, so it is queued once whichever node caused it:
//! - `P:A:occ:C`: the nodes with subscribers of channel C (apps with occupancy webhooks);
//! - `P:node:N:occ`: the `A\nC` channels node N is in (for cleanup);
//! - `P:wh:events`: the stream of webhook events, fields `a` app, `t` time in ms, `k` kind,
//!   `c` channel, `u` user id, `e` the whole event's JSON (client events, counts);
//! - `P:wh:delayed`: `channel_vacated` and `member_removed` waiting out the delay, members
//!   `A\nKIND\nC\nU`, scored by their time; the opposite transition removes one (and is then
//!   not sent either), `PROMOTE` moves the due ones to the stream;
//! - `P:A:wh:count`: per channel, the last subscription count sent and when (`N:T`);
//! - `P:A:wh:miss:C`: present while a channel's `cache_miss` was sent recently.

/// Longest the webhook stream may grow (entries are deleted once delivered; this bounds
/// Redis's memory when no node can deliver for a long time).
pub(crate) const STREAM_MAX: u64 = 1_000_000;

/// Registers a user's first socket on this node. KEYS: info, n, node set, version, delayed
/// webhooks, webhook stream. ARGV: entry, user id, user_info (may be empty), max members
/// (0: none), pub/sub channel, webhooks wanted (1/0), app id, channel, time in ms.
/// Returns 1 (member), 0 (the channel is full).
pub(crate) const JOIN: &str = r#"
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
  if ARGV[6] == '1' then
    local pending = ARGV[7] .. '\nmember_removed\n' .. ARGV[8] .. '\n' .. ARGV[2]
    if redis.call('ZREM', KEYS[5], pending) == 0 then
      redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[10], '*', 'a', ARGV[7], 't', ARGV[9],
        'k', 'member_added', 'c', ARGV[8], 'u', ARGV[2])
    end
  end
end
return 1
"#;

/// Unregisters a user's last socket on this node. KEYS as for [`JOIN`]. ARGV: entry, user
/// id, pub/sub channel, webhooks wanted (1/0), app id, channel, time in ms.
pub(crate) const LEAVE: &str = r#"
if redis.call('SREM', KEYS[3], ARGV[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[1], ARGV[2])
  local v = redis.call('INCR', KEYS[4])
  redis.call('PUBLISH', ARGV[3], 'P1-' .. v .. ':' .. string.len(ARGV[2]) .. ':' .. ARGV[2])
  if ARGV[4] == '1' then
    redis.call('ZADD', KEYS[5], ARGV[7], ARGV[5] .. '\nmember_removed\n' .. ARGV[6] .. '\n' .. ARGV[2])
  end
end
return 1
"#;

/// The node's first subscriber of a channel. KEYS: the channel's node set `P:A:occ:C`, the
/// node's channel set `P:node:N:occ`, delayed webhooks, webhook stream. ARGV: node id,
/// `A\nC`, app id, channel, time in ms, stream bound. Queues `channel_occupied` when the
/// channel was empty cluster-wide, unless it cancels a `channel_vacated` still waiting.
pub(crate) const OCCUPY: &str = r#"
redis.call('SADD', KEYS[2], ARGV[2])
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then
  local pending = ARGV[3] .. '\nchannel_vacated\n' .. ARGV[4] .. '\n'
  if redis.call('ZREM', KEYS[3], pending) == 0 then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'a', ARGV[3], 't', ARGV[5],
      'k', 'channel_occupied', 'c', ARGV[4])
  end
  return 1
end
return 0
"#;

/// The node's last subscriber of a channel left. KEYS and ARGV as for [`OCCUPY`]. The
/// cluster's last one puts `channel_vacated` in the delayed set.
pub(crate) const VACATE: &str = r#"
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3] .. '\nchannel_vacated\n' .. ARGV[4] .. '\n')
  return 1
end
return 0
"#;

/// Moves the delayed webhooks created at or before ARGV[1] (ms) to the stream, at most
/// ARGV[2] of them. KEYS: delayed webhooks, webhook stream. ARGV[3]: stream bound.
pub(crate) const PROMOTE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #due, 2 do
  local m = due[i]
  redis.call('ZREM', KEYS[1], m)
  local a, k, c, u = string.match(m, '^([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
  if a then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'a', a, 't', due[i + 1], 'k', k, 'c', c, 'u', u)
  end
end
return #due / 2
"#;

/// A `cache_miss` at most once per channel per ARGV[1] ms. KEYS: the channel's marker,
/// webhook stream. ARGV: quiet ms, app id, channel, time in ms, stream bound.
pub(crate) const CACHE_MISS: &str = r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'a', ARGV[2], 't', ARGV[4], 'k', 'cache_miss', 'c', ARGV[3])
return 1
"#;

/// A channel's cluster-wide subscription count, queued when it differs from the last one
/// sent; above ARGV[6] subscribers at most every ARGV[7] ms (returns 2: ask again later).
/// KEYS: `P:A:wh:count`, webhook stream. ARGV: channel, count, time in ms, app id, the
/// event's JSON, busy threshold, busy interval, stream bound.
pub(crate) const COUNT: &str = r#"
local prev = redis.call('HGET', KEYS[1], ARGV[1])
local last_n, last_t = nil, 0
if prev then
  local n, t = string.match(prev, '^(%d+):(%d+)$')
  last_n, last_t = n, tonumber(t) or 0
end
if last_n == ARGV[2] then return 0 end
if tonumber(ARGV[2]) > tonumber(ARGV[6]) and tonumber(ARGV[3]) - last_t < tonumber(ARGV[7]) then return 2 end
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'a', ARGV[4], 't', ARGV[3],
  'k', 'subscription_count', 'c', ARGV[1], 'e', ARGV[5])
return 1
"#;

/// A user's first socket on this node signed in. KEYS: online hash `P:A:online`, node set
/// `P:node:N:online`. ARGV: entry `A\nU`, user id, pub/sub channel `P:A:#watch:U`.
pub(crate) const SIGNED_IN: &str = r#"
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[1], ARGV[2], 1) == 1 then
  redis.call('PUBLISH', ARGV[3], 'W1+')
end
return 1
"#;

/// A user's last socket on this node signed out. KEYS and ARGV as for [`SIGNED_IN`].
pub(crate) const SIGNED_OUT: &str = r#"
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[1], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('PUBLISH', ARGV[3], 'W1-')
end
return 1
"#;

/// The member list and the version it is at. KEYS: info, version.
/// Returns `{version, user1, info1, user2, info2, …}`.
pub(crate) const SNAPSHOT: &str = r#"
local v = tonumber(redis.call('GET', KEYS[2]) or '0')
local out = {v}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do out[#out + 1] = all[i] end
return out
"#;

/// Removes everything node N registered, announcing the users it was the last node of
/// (and queueing their `member_removed`, and `channel_vacated` for the channels it was the
/// last node of, as delayed webhooks).
/// Skipped while N's lease lives, unless forced (a node cleaning up after itself).
/// ARGV: prefix, node id, force (1/0), time in ms. Returns how many entries were removed.
pub(crate) const CLEANUP: &str = r#"
local p, node = ARGV[1], ARGV[2]
local delayed = p .. ':wh:delayed'
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
      redis.call('ZADD', delayed, ARGV[4], a .. '\nmember_removed\n' .. c .. '\n' .. u)
    end
  end
end
redis.call('DEL', set)
local occ = p .. ':node:' .. node .. ':occ'
local occupied = redis.call('SMEMBERS', occ)
for _, e in ipairs(occupied) do
  local a, c = string.match(e, '^([^\n]*)\n(.*)$')
  if a then
    local nodes = p .. ':' .. a .. ':occ:' .. c
    if redis.call('SREM', nodes, node) == 1 and redis.call('SCARD', nodes) == 0 then
      redis.call('ZADD', delayed, ARGV[4], a .. '\nchannel_vacated\n' .. c .. '\n')
    end
  end
end
redis.call('DEL', occ)
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
