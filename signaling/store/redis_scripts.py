"""The Lua scripts of the Redis store. The states and urgency ranks they compare
are generated from the transition table and the urgency order of
``signaling.model``, so the scripts cannot drift from them (a test checks both)."""

from __future__ import annotations

from ..model import ConsultChange, SessionChange, Transition, Urgency
from .base import encode


def lua_set(states) -> str:
    """A Lua table literal that has each state's stored (JSON) form as a key."""
    return "{" + ", ".join(f"['{encode(state)}'] = true" for state in sorted(states)) + "}"


def lua_transition(transition: Transition) -> str:
    """The sources and target of a fixed transition, for a script: generated from
    the transition table, so the scripts cannot drift from it."""
    return (
        f"local SOURCES = {lua_set(transition.sources)}\n"
        f"local TARGET = '{encode(transition.target)}'\n"
    )


# Queue score: urgency rank, then created_at (see redis._queue_score).
LUA_PRELUDE = (
    "local RANK = {"
    + ", ".join(f"['{encode(urgency)}'] = {urgency.rank}" for urgency in Urgency)
    + "}\n"
    + """
local function queue_score(key)
  local f = redis.call('HMGET', key, 'urgency', 'created_at')
  return string.format('%.17g', (RANK[f[1]] or 3) * 1e13 + (tonumber(f[2]) or 0))
end
"""
)

# KEYS: consult, open zset, all zset, facility zset
# ARGV: id, queue score, created score, open ('1'|'0'), field/value pairs...
CREATE = """
local cur = redis.call('HGET', KEYS[1], 'state')
if cur then return {'conflict', cur} end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
if ARGV[4] == '1' then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1]) end
return {'ok'}
"""

# KEYS: record[, open zset (consults only)]
# ARGV: id, new state ('' keeps it), open ('1'|'0'|'' as it was), n, n from-states,
#       field/value pairs... States are compared as their JSON encodings.
TRANSITION = (
    LUA_PRELUDE
    + """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {'notfound'} end
local n = tonumber(ARGV[4])
local allowed = false
for i = 5, 4 + n do
  if ARGV[i] == cur then allowed = true end
end
if not allowed then return {'conflict', cur} end
if #ARGV > 4 + n then redis.call('HSET', KEYS[1], unpack(ARGV, 5 + n)) end
redis.call('HINCRBY', KEYS[1], 'version', 1)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[2]) end
if KEYS[2] then
  if ARGV[3] == '1' then
    redis.call('ZADD', KEYS[2], queue_score(KEYS[1]), ARGV[1])
  elseif ARGV[3] == '0' then
    redis.call('ZREM', KEYS[2], ARGV[1])
  elseif redis.call('ZSCORE', KEYS[2], ARGV[1]) then
    redis.call('ZADD', KEYS[2], queue_score(KEYS[1]), ARGV[1])
  end
end
return {'ok', redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: due zset. ARGV: now, limit. Whoever removes an item owns it.
CLAIM = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local claimed = {}
for _, item in ipairs(items) do
  if redis.call('ZREM', KEYS[1], item) == 1 then table.insert(claimed, item) end
end
return claimed
"""

# KEYS: session. ARGV: expected node (JSON), new node (JSON)
REHOME = (
    lua_transition(SessionChange.REHOME)
    + """
local f = redis.call('HMGET', KEYS[1], 'node', 'state')
if not f[2] then return {'notfound'} end
if not SOURCES[f[2]] then return {'conflict', f[2]} end
if f[1] ~= ARGV[1] then return {'moved', f[1]} end
redis.call('HSET', KEYS[1], 'node', ARGV[2], 'state', TARGET)
return {'ok', redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: consult, open zset, session, sessions zset
# ARGV: consult id, session id, session score, n, n consult field/value items,
#       session field/value pairs...
ACCEPT = (
    LUA_PRELUDE
    + lua_transition(ConsultChange.ACCEPT)
    + """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {'notfound'} end
if not SOURCES[cur] then return {'conflict', cur} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'session_exists'} end
local n = tonumber(ARGV[4])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 5, 4 + n)) end
redis.call('HSET', KEYS[1], 'state', TARGET)
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('ZADD', KEYS[2], queue_score(KEYS[1]), ARGV[1])
redis.call('HSET', KEYS[3], unpack(ARGV, 5 + n))
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
return {'ok', redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: nodes set, node keys...; ARGV: the ids of those node keys.
# Rechecks existence atomically so a node re-registered meanwhile is kept.
PRUNE_NODES = """
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then redis.call('SREM', KEYS[1], ARGV[i - 1]) end
end
return 0
"""
