-- ARGV: prefix, now, grace, leeway, id, presented_hash, new_hash, node, inbox
local now, grace, leeway = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local id = ARGV[5]
local k = P .. 's:' .. id
local f = redis.call('HMGET', k, 'th', 'sub', 'jti', 'iat', 'exp', 'att', 'epoch', 'inbox')
if not f[1] then return false end
if not is_alive(id, now, grace, leeway) or is_revoked(f[2], f[3], f[4], now) then
  remove(id, '"replaced"')
  return false
end
-- Both sides are SHA-256 digests: comparing them leaks nothing about the token.
if f[1] ~= ARGV[6] then return false end
local epoch = redis.call('INCR', P .. 'epoch')
if f[6] == '1' then
  tell(f[8], '{"kind":"replaced","to":[["' .. id .. '",' .. f[7] .. ',0]]}')
end
redis.call('HSET', k, 'th', ARGV[7], 'epoch', epoch, 'att', '1', 'det', '',
  'node', ARGV[8], 'inbox', ARGV[9])
set_ttl(id, session_ends_at(nil, tonumber(f[5]), grace, leeway), now)
local h = redis.call('HMGET', k, 'claims', 'auth', 'exps', 'seq')
return {epoch, h[1], h[2], h[3], h[4],
  redis.call('SMEMBERS', P .. 'sc:' .. id), redis.call('LRANGE', P .. 'sb:' .. id, 0, -1)}
