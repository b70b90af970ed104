-- Shared by every script. ARGV[1] is the key prefix; times are milliseconds from
-- the calling node's clock. Key layout (docs/operations.md):
--   s:<id>  session hash     sc:<id> its channels     sb:<id> its replay buffer
--   u:<sub> sessions by user (zset, score = creation epoch)
--   c:<ch>  sessions joined to a channel     j:<jti> sessions holding a jti
--   rj:<jti> / rs:<sub> revocations     in:<inbox> a node's notice stream
--   epoch   the attachment counter
--   deadlines  when each session and revocation ends (zset), for purge.lua
local P = ARGV[1]

-- The session rules, one function each, mirroring wsauth_core::rules (Lua cannot
-- call Rust). The store contract's RULE_CASES run both stores through the same
-- edges, so a mirror that drifts fails the Redis contract test. No other line of
-- the scripts states these rules.

-- wsauth_core::rules::session_ends_at; detached_at is nil while attached.
local function session_ends_at(detached_at, exp, grace, leeway)
  local token_end = exp + leeway
  if detached_at == nil then return token_end end
  return math.min(token_end, detached_at + grace)
end

-- wsauth_core::rules::session_alive
local function session_alive(now, detached_at, exp, grace, leeway)
  return now < session_ends_at(detached_at, exp, grace, leeway)
end

-- wsauth_core::rules::entry_in_force
local function entry_in_force(now, untl)
  return now < untl
end

-- wsauth_core::rules::sub_revocation_covers; iat is '' when the token has none.
local function sub_revocation_covers(iat, at)
  return iat == '' or tonumber(iat) <= at
end

-- wsauth_core::rules::token_revoked; an absent entry is nil.
local function token_revoked(now, iat, jti_until, sub_at, sub_until)
  if jti_until ~= nil and entry_in_force(now, jti_until) then return true end
  return sub_until ~= nil and entry_in_force(now, sub_until) and sub_revocation_covers(iat, sub_at)
end

-- wsauth_core::rules::jti_revocation_until; known_exp is nil when no session knows it.
local function jti_revocation_until(now, known_exp, leeway, lifetime)
  if known_exp ~= nil then return known_exp + leeway end
  return now + lifetime
end

-- wsauth_core::rules::sub_revocation_until
local function sub_revocation_until(now, lifetime)
  return now + lifetime
end

-- wsauth_core::rules::limit_decision: how many of the oldest sessions to evict, or
-- false to refuse. policy: 'evict' or 'reject'.
local function limit_decision(live, max, policy)
  if live < max then return 0 end
  if policy == 'reject' then return false end
  return live + 1 - math.max(max, 1)
end

-- What the rules need of a stored session: its detached_at (nil while attached)
-- and exp, or nothing when it is gone.
local function session_times(id)
  local f = redis.call('HMGET', P .. 's:' .. id, 'att', 'det', 'exp')
  if not f[3] then return nil end
  local detached_at = nil
  if f[1] ~= '1' then detached_at = tonumber(f[2]) or 0 end
  return detached_at, tonumber(f[3])
end

local function is_alive(id, now, grace, leeway)
  local detached_at, exp = session_times(id)
  return exp ~= nil and session_alive(now, detached_at, exp, grace, leeway)
end

local function is_revoked(sub, jti, iat, now)
  local jti_until = nil
  if jti ~= '' then
    local untl = redis.call('GET', P .. 'rj:' .. jti)
    if untl then jti_until = tonumber(untl) end
  end
  local r = redis.call('HMGET', P .. 'rs:' .. sub, 'at', 'until')
  local sub_at, sub_until = nil, nil
  if r[2] then sub_at, sub_until = tonumber(r[1]), tonumber(r[2]) end
  return token_revoked(now, iat, jti_until, sub_at, sub_until)
end

-- Appends a notice to a node's stream; the node reads it and tells its connection.
local function tell(inbox, msg)
  local k = P .. 'in:' .. inbox
  redis.call('XADD', k, 'MAXLEN', '~', '100000', '*', 'm', msg)
  redis.call('PEXPIRE', k, 3600000) -- INBOX_TTL_MS in lib.rs
end

-- Removes a session and every reference to it; tells its connection `kind` (a JSON
-- fragment) when one is attached. Returns whether a connection was told.
local function remove(id, kind)
  local k = P .. 's:' .. id
  local f = redis.call('HMGET', k, 'sub', 'jti', 'att', 'epoch', 'inbox')
  if not f[1] then return false end
  redis.call('ZREM', P .. 'u:' .. f[1], id)
  if f[2] ~= '' then redis.call('SREM', P .. 'j:' .. f[2], id) end
  for _, ch in ipairs(redis.call('SMEMBERS', P .. 'sc:' .. id)) do
    redis.call('SREM', P .. 'c:' .. ch, id)
  end
  redis.call('DEL', k, P .. 'sc:' .. id, P .. 'sb:' .. id)
  redis.call('ZREM', P .. 'deadlines', 's:' .. id)
  if kind and f[3] == '1' then
    tell(f[5], '{"kind":' .. kind .. ',"to":[["' .. id .. '",' .. f[4] .. ',0]]}')
    return true
  end
  return false
end

local function extend(k, ms)
  if redis.call('PTTL', k) < ms then redis.call('PEXPIRE', k, ms) end
end

-- Records when something ends (a key suffix such as s:<id>), for purge.lua.
local function deadline(member, at, now)
  redis.call('ZADD', P .. 'deadlines', at, member)
  extend(P .. 'deadlines', at - now)
end

-- A session ends at `at`: every key of it expires then, the indexes that name it
-- no sooner.
local function set_ttl(id, at, now)
  local ms = at - now
  if ms <= 0 then
    remove(id, nil)
    return
  end
  local k = P .. 's:' .. id
  local f = redis.call('HMGET', k, 'sub', 'jti')
  redis.call('PEXPIRE', k, ms)
  redis.call('PEXPIRE', P .. 'sc:' .. id, ms)
  redis.call('PEXPIRE', P .. 'sb:' .. id, ms)
  extend(P .. 'u:' .. f[1], ms)
  if f[2] ~= '' then extend(P .. 'j:' .. f[2], ms) end
  for _, ch in ipairs(redis.call('SMEMBERS', P .. 'sc:' .. id)) do
    extend(P .. 'c:' .. ch, ms)
  end
  deadline('s:' .. id, at, now)
end
