-- ARGV: prefix, now, max_token_lifetime, leeway, kind (jti|sub|session), value, at_s,
--       revocation as JSON
local now, lifetime, leeway = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local kind, value = ARGV[5], ARGV[6]
local notice = '"revoked","at":' .. ARGV[2] .. ',"rev":' .. ARGV[8]
local concerned = {}
if kind == 'session' then
  concerned[1] = value
elseif kind == 'jti' then
  local known_exp = nil
  for _, id in ipairs(redis.call('SMEMBERS', P .. 'j:' .. value)) do
    local f = redis.call('HMGET', P .. 's:' .. id, 'jti', 'exp')
    if f[1] == value then
      concerned[#concerned + 1] = id
      known_exp = math.max(known_exp or 0, tonumber(f[2]))
    else
      redis.call('SREM', P .. 'j:' .. value, id)
    end
  end
  local untl = jti_revocation_until(now, known_exp, leeway, lifetime)
  local cur = tonumber(redis.call('GET', P .. 'rj:' .. value) or '0')
  untl = math.max(untl, cur)
  if entry_in_force(now, untl) then
    redis.call('SET', P .. 'rj:' .. value, untl, 'PX', untl - now)
    deadline('rj:' .. value, untl, now)
  end
else
  local at = tonumber(ARGV[7])
  local rk = P .. 'rs:' .. value
  local r = redis.call('HMGET', rk, 'at', 'until')
  local untl = math.max(sub_revocation_until(now, lifetime), tonumber(r[2] or '0'))
  redis.call('HSET', rk, 'at', math.max(at, tonumber(r[1] or '0')), 'until', untl)
  redis.call('PEXPIRE', rk, untl - now)
  deadline('rs:' .. value, untl, now)
  for _, id in ipairs(redis.call('ZRANGE', P .. 'u:' .. value, 0, -1)) do
    local iat = redis.call('HGET', P .. 's:' .. id, 'iat')
    if iat and sub_revocation_covers(iat, at) then concerned[#concerned + 1] = id end
  end
end
local told = 0
for _, id in ipairs(concerned) do
  if remove(id, notice) then told = told + 1 end
end
return told
