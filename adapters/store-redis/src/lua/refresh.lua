-- ARGV: prefix, now, leeway, id, epoch, sub, jti, iat_s, exp_ms, claims
local now, leeway = tonumber(ARGV[2]), tonumber(ARGV[3])
local id, jti = ARGV[4], ARGV[7]
if is_revoked(ARGV[6], jti, ARGV[8], now) then return 'revoked' end
local k = P .. 's:' .. id
local f = redis.call('HMGET', k, 'epoch', 'jti')
if f[1] == ARGV[5] then
  if f[2] ~= jti and f[2] ~= '' then redis.call('SREM', P .. 'j:' .. f[2], id) end
  redis.call('HSET', k, 'jti', jti, 'iat', ARGV[8], 'exp', ARGV[9], 'claims', ARGV[10],
    'auth', ARGV[2], 'exps', '0')
  if jti ~= '' then redis.call('SADD', P .. 'j:' .. jti, id) end
  -- Refreshed by its connection: attached, so no grace applies.
  set_ttl(id, session_ends_at(nil, tonumber(ARGV[9]), 0, leeway), now)
end
return 'ok'
