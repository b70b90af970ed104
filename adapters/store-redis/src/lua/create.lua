-- ARGV: prefix, now, grace, leeway, sub, jti, iat_s, exp_ms, claims, id, token_hash,
--       node, inbox, max_per_user (0: none), policy (evict|reject)
local now, grace, leeway = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local sub, jti, iat, exp = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
if is_revoked(sub, jti, iat, now) then return {'revoked'} end
local ukey = P .. 'u:' .. sub
local max = tonumber(ARGV[14])
local evicted = 0
if max > 0 then
  -- Only a limit needs the user's live sessions counted now (see memory.rs).
  for _, old in ipairs(redis.call('ZRANGE', ukey, 0, -1)) do
    if not is_alive(old, now, grace, leeway) then
      remove(old, nil)
      redis.call('ZREM', ukey, old)
    end
  end
  local mine = redis.call('ZRANGE', ukey, 0, -1)
  local evict = limit_decision(#mine, max, ARGV[15])
  if not evict then return {'too_many'} end
  for i = 1, evict do
    remove(mine[i], '"replaced"')
    evicted = evicted + 1
  end
end
local epoch = redis.call('INCR', P .. 'epoch')
local id = ARGV[10]
redis.call('HSET', P .. 's:' .. id, 'sub', sub, 'jti', jti, 'iat', iat, 'exp', ARGV[8],
  'claims', ARGV[9], 'th', ARGV[11], 'epoch', epoch, 'att', '1', 'det', '',
  'created', ARGV[2], 'auth', ARGV[2], 'exps', '0', 'seq', '0', 'node', ARGV[12],
  'inbox', ARGV[13])
redis.call('ZADD', ukey, epoch, id)
if jti ~= '' then redis.call('SADD', P .. 'j:' .. jti, id) end
set_ttl(id, session_ends_at(nil, exp, grace, leeway), now)
return {'created', epoch, evicted}
