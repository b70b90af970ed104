-- ARGV: prefix, channel, body, buffer_cap
-- body is `"channel":…,"from":…,"data":…` as JSON members, encoded by the caller.
local ch, body, cap = ARGV[2], ARGV[3], tonumber(ARGV[4])
local n, inboxes, targets = 0, {}, {}
for _, id in ipairs(redis.call('SMEMBERS', P .. 'c:' .. ch)) do
  local k = P .. 's:' .. id
  local f = redis.call('HMGET', k, 'att', 'epoch', 'inbox')
  if not f[2] then
    redis.call('SREM', P .. 'c:' .. ch, id)
  else
    n = n + 1
    local seq = redis.call('HINCRBY', k, 'seq', 1)
    if cap > 0 then
      local b = P .. 'sb:' .. id
      if redis.call('RPUSH', b, '{"seq":' .. seq .. ',' .. body .. '}') == 1 then
        redis.call('PEXPIRE', b, redis.call('PTTL', k))
      end
      redis.call('LTRIM', b, -cap, -1)
    end
    if f[1] == '1' then
      local t = targets[f[3]]
      if not t then
        t = {}
        targets[f[3]] = t
        inboxes[#inboxes + 1] = f[3]
      end
      t[#t + 1] = '["' .. id .. '",' .. f[2] .. ',' .. seq .. ']'
    end
  end
end
for _, inbox in ipairs(inboxes) do
  tell(inbox, '{"kind":"deliver",' .. body .. ',"to":[' .. table.concat(targets[inbox], ',') .. ']}')
end
return n
