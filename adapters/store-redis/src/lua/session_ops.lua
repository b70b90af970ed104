-- Operations of the connection holding a session at an epoch; a stale epoch does
-- nothing. ARGV: prefix, op, id, epoch, now, grace, leeway, channel
local op, id, epoch = ARGV[2], ARGV[3], ARGV[4]
local k = P .. 's:' .. id
if redis.call('HGET', k, 'epoch') ~= epoch then return 0 end
if op == 'expiring' then
  redis.call('HSET', k, 'exps', '1')
elseif op == 'join' then
  local ch = ARGV[8]
  redis.call('SADD', P .. 'sc:' .. id, ch)
  redis.call('SADD', P .. 'c:' .. ch, id)
  local ttl = redis.call('PTTL', k)
  redis.call('PEXPIRE', P .. 'sc:' .. id, ttl)
  extend(P .. 'c:' .. ch, ttl)
elseif op == 'leave' then
  redis.call('SREM', P .. 'sc:' .. id, ARGV[8])
  redis.call('SREM', P .. 'c:' .. ARGV[8], id)
elseif op == 'detach' then
  local now, grace, leeway = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  redis.call('HSET', k, 'att', '0', 'det', ARGV[5])
  local exp = tonumber(redis.call('HGET', k, 'exp'))
  set_ttl(id, session_ends_at(now, exp, grace, leeway), now)
elseif op == 'end' then
  remove(id, nil)
end
return 1
