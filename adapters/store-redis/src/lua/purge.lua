-- Drops what ended by `now` (the caller's clock; Redis's own TTLs catch the rest).
-- ARGV: prefix, now, grace, leeway, batch. Returns how many entries were handled.
local now, grace, leeway = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', P .. 'deadlines', '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
for _, member in ipairs(due) do
  local kind, rest = string.match(member, '^(%a+):(.*)$')
  if kind == 's' then
    if not is_alive(rest, now, grace, leeway) then remove(rest, nil) end
  elseif kind == 'rj' then
    local untl = redis.call('GET', P .. member)
    if not untl or not entry_in_force(now, tonumber(untl)) then redis.call('DEL', P .. member) end
  elseif kind == 'rs' then
    local untl = redis.call('HGET', P .. member, 'until')
    if not untl or not entry_in_force(now, tonumber(untl)) then redis.call('DEL', P .. member) end
  end
  redis.call('ZREM', P .. 'deadlines', member)
end
return #due
