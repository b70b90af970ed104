-- Shared by every script. ARGV[1] is the key prefix; times are milliseconds from
-- the calling node's clock. Key layout (docs/operations.md):
--   s:<id>  session hash     sc:<id> its channels     sb:<id> its replay buffer
--   u:<sub> sessions by user (zset, score = creation epoch)
--   c:<ch>  sessions joined to a channel     j:<jti> sessions holding a jti
--   rj:<jti> / rs:<sub> revocations     in:<inbox> a node's notice stream
--   epoch   the attachment counter
--   deadlines  when each session and revocation ends (zset), for purge.lua
local P = ARGV[1]

local function is_alive(id, now, grace, leeway)
  local f = redis.call('HMGET', P .. 's:' .. id, 'att', 'det', 'exp')
  if not f[3] then return false end
  local within = f[1] == '1' or (f[2] and f[2] ~= '' and now < tonumber(f[2]) + grace)
  return within and now < tonumber(f[3]) + leeway
end

local function is_revoked(sub, jti, iat, now)
  if jti ~= '' then
    local untl = redis.call('GET', P .. 'rj:' .. jti)
    if untl and now < tonumber(untl) then return true end
  end
  local r = redis.call('HMGET', P .. 'rs:' .. sub, 'at', 'until')
  return (r[2] and now < tonumber(r[2]) and (iat == '' or tonumber(iat) <= tonumber(r[1]))) and true or false
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
