-- Reads that need several keys. ARGV: prefix, op, …
--   revoked, now, sub, jti, iat_s  → 1 or 0
--   sessions_of, sub               → {id, attached, created, exp, {channels}, node} per session
--   session, id                    → the same for one session, or nothing
local op = ARGV[2]
if op == 'revoked' then
  return is_revoked(ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[3])) and 1 or 0
end
local ids
if op == 'session' then
  ids = {ARGV[3]}
else
  ids = redis.call('ZRANGE', P .. 'u:' .. ARGV[3], 0, -1)
end
local out = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', P .. 's:' .. id, 'att', 'created', 'exp', 'node')
  if f[3] then
    out[#out + 1] = {id, f[1], f[2], f[3], redis.call('SMEMBERS', P .. 'sc:' .. id), f[4]}
  end
end
return out
