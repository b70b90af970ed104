-- ARGV: prefix, channel, body, buffer_cap, to, now, grace, leeway, buffer_bytes
-- body is `"channel":…,"from":…,"data":…` as JSON members, encoded by the caller
-- (no `from` when the server publishes or sends).
-- to: 'c' for the sessions joined to the channel (publish), or 'u:<sub>' for every
-- session of that user alive now, attached or within grace, joined or not
-- (send_to_user, on the channel user:<sub>).
local ch, body, cap, to = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local cap_bytes = tonumber(ARGV[9])
local ids, index
if to == 'c' then
  index = P .. 'c:' .. ch
  ids = redis.call('SMEMBERS', index)
else
  local now, grace, leeway = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
  ids = {}
  for _, id in ipairs(redis.call('ZRANGE', P .. to, 0, -1)) do
    if is_alive(id, now, grace, leeway) then ids[#ids + 1] = id end
  end
end
local n, inboxes, targets = 0, {}, {}
for _, id in ipairs(ids) do
  local k = P .. 's:' .. id
  local f = redis.call('HMGET', k, 'att', 'epoch', 'inbox')
  if not f[2] then
    if index then redis.call('SREM', index, id) end
  else
    n = n + 1
    local seq = redis.call('HINCRBY', k, 'seq', 1)
    if cap > 0 then
      local b = P .. 'sb:' .. id
      local entry = '{"seq":' .. seq .. ',' .. body .. '}'
      local len = redis.call('RPUSH', b, entry)
      -- 'bb': the bytes in the buffer; reset when the buffer starts anew.
      local bytes
      if len == 1 then
        redis.call('PEXPIRE', b, redis.call('PTTL', k))
        bytes = #entry
        redis.call('HSET', k, 'bb', bytes)
      else
        bytes = redis.call('HINCRBY', k, 'bb', #entry)
      end
      -- The oldest go first, past the count or the bytes.
      while len > cap or (cap_bytes > 0 and bytes > cap_bytes) do
        local oldest = redis.call('LPOP', b)
        if not oldest then break end
        len = len - 1
        bytes = redis.call('HINCRBY', k, 'bb', -#oldest)
      end
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
