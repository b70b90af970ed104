-- Reads that need several keys. ARGV: prefix, op, …
--   revoked, now, sub, jti, iat_s  → 1 or 0
--   sessions_of, sub               → {id, attached, created, exp, {channels}} per session
local op = ARGV[2]
if op == 'revoked' then
  return is_revoked(ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[3])) and 1 or 0
end
local out = {}
for _, id in ipairs(redis.call('ZRANGE', P .. 'u:' .. ARGV[3], 0, -1)) do
  local f = redis.call('HMGET', P .. 's:' .. id, 'att', 'created', 'exp')
  if f[3] then
    out[#out + 1] = {id, f[1], f[2], f[3], redis.call('SMEMBERS', P .. 'sc:' .. id)}
  end
end
return out
