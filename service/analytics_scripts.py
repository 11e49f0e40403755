"""The Lua that keeps the journey analytics in Redis (see `service.analytics` for the keys).

`RECORD` applies one batch's facts behind a per-partition offset fence, resolves the exits
and abandoned carts whose deadlines passed (by the customer's own later event, or by the
partition's event-time watermark), and drops buckets past their retention, all in one call.
It sums the batch in Lua tables first (by map, hour, segments and field), then reads and
writes each key once (HMGET, HSET of all its fields), and reads and writes the customers'
pending records in bulk: the cost of `redis.call` is paid per key, not per event or field.
Every key is built from the base passed in ARGV, which carries the `{analytics}` hash tag:
the keys share one Redis Cluster slot.
"""

from __future__ import annotations

from typing import Final

RECORD: Final = """
-- KEYS: fence, clock, pending, expiry index
-- ARGV: base, map, hour retention ms, day retention ms, lateness ms, sweep limit,
--   touchpoints kept per bucket, prune limit, abandon after ms, JSON [partitions to sweep],
--   JSON [[partition, customer, [fact...]]...], then the facts' leaving records (JSON text,
--   one argument each: never parsed here unless an exit or a cart resolves from them).
--   Each fact is [offset, at, exit due, cart due or 0, k (its leaving is ARGV[11 + k]; 0:
--   none), segments (space separated), [counts...], [entered stages...],
--   [progress touches...], [loop touches...]], the trailing empty lists left out: most
--   events move no one, and each list decoded here is a table built.
local FENCE, CLOCK, PENDING, EXPIRY = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local base, map = ARGV[1], ARGV[2]
local KEEP = {h = tonumber(ARGV[3]), d = tonumber(ARGV[4])}
local SIZE = {h = 3600000, d = 86400000}
local lateness, sweep_limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local max_touch, prune_limit = tonumber(ARGV[7]), tonumber(ARGV[8])
local abandon_after = tonumber(ARGV[9])

local function num(x)
  return string.format('%.17g', x)
end

-- call `command key` with `items` as arguments, a chunk at a time (Lua's unpack is bounded)
local function each_chunk(command, key, items)
  for from = 1, #items, 1000 do
    redis.call(command, key, unpack(items, from, math.min(from + 999, #items)))
  end
end

-- add `sums` (field -> n) to the hash `key`: one read and one write per chunk of fields
local function add_all(key, sums)
  local fields = {}
  for field in pairs(sums) do fields[#fields + 1] = field end
  for from = 1, #fields, 500 do
    local part = {unpack(fields, from, math.min(from + 499, #fields))}
    local current = redis.call('HMGET', key, unpack(part))
    local flat = {}
    for j, field in ipairs(part) do
      flat[#flat + 1] = field
      flat[#flat + 1] = num((tonumber(current[j]) or 0) + sums[field])
    end
    redis.call('HSET', key, unpack(flat))
  end
end

-- facts summed by map, hour and segment list; expanded to keys at the end
local counts, touches, visits = {}, {}, {}
local function slot(tbl, m, at, segs)
  local hour = at - at % SIZE.h
  local by_hour = tbl[m]
  if not by_hour then by_hour = {}; tbl[m] = by_hour end
  local by_segs = by_hour[hour]
  if not by_segs then by_segs = {}; by_hour[hour] = by_segs end
  local fields = by_segs[segs]
  if not fields then fields = {}; by_segs[segs] = fields end
  return fields
end
local function add(tbl, m, at, segs, field, n)
  local fields = slot(tbl, m, at, segs)
  fields[field] = (fields[field] or 0) + n
end
local function visit(m, at, segs, stage, customer)
  local fields = slot(visits, m, at, segs)
  local who = fields[stage]
  if not who then who = {}; fields[stage] = who end
  who[customer] = true
end

-- each customer's pending outcomes, stored as '<exit due|-> <cart due|-> <leaving JSON>'
local pend, changed, is_changed, indexed = {}, {}, {}, {}
local function load(customers)  -- read the pending records not read yet, in bulk
  local wanted = {}
  for _, customer in ipairs(customers) do
    if pend[customer] == nil then
      pend[customer] = false
      wanted[#wanted + 1] = customer
    end
  end
  for from = 1, #wanted, 1000 do
    local part = {unpack(wanted, from, math.min(from + 999, #wanted))}
    for j, raw in ipairs(redis.call('HMGET', PENDING, unpack(part))) do
      if raw then
        local xd, cd, leaving = string.match(raw, '^(%S+) (%S+) (.*)$')
        local p = {xd = tonumber(xd), cd = tonumber(cd), leaving = leaving}
        pend[part[j]] = p
        indexed[part[j]] = {x = p.xd ~= nil, c = p.cd ~= nil}  -- what the indexes hold now
      end
    end
  end
end
local function mark(customer, p, part)
  if not is_changed[customer] then
    is_changed[customer] = true
    changed[#changed + 1] = customer
  end
  p.part = part
end

-- leaving: [map, at, stage, segments, touches, cart [at, where, cents] or null,
--   dwell bin (absent in records kept before it was)]
local exits, carts = 0, 0
local function leaving(p)
  if not p.decoded then p.decoded = cjson.decode(p.leaving) end
  return p.decoded
end
local function exit_of(p)
  local l = leaving(p)
  add(counts, l[1], l[2], l[4], 'm|' .. l[3] .. '|exit', 1)
  if l[7] then add(counts, l[1], l[2], l[4], 'w|' .. l[3] .. '|' .. num(l[7]), 1) end
  for _, k in ipairs(l[5]) do add(touches, l[1], l[2], l[4], 'x|' .. k, 1) end
  p.xd = nil
  exits = exits + 1
end
local function abandon(p)
  local l = leaving(p)
  local cart = l[6]
  if type(cart) == 'table' then
    add(counts, l[1], cart[1], l[4], 'a|' .. cart[2], 1)
    add(counts, l[1], cart[1], l[4], 'v|' .. cart[2], cart[3])
    for _, k in ipairs(l[5]) do add(touches, l[1], cart[1], l[4], 'a|' .. k, 1) end
    carts = carts + 1
  end
  p.cd = nil
end

local NONE = {}
local sweep, newest, highest = {}, {}, {}
for _, part in ipairs(cjson.decode(ARGV[10])) do sweep[part] = true end
local batch, customers = cjson.decode(ARGV[11]), {}
for j, group in ipairs(batch) do customers[j] = group[2] end
load(customers)
local fences, applied = {}, 0
for _, group in ipairs(batch) do
  local part, customer = group[1], group[2]
  if fences[part] == nil then
    fences[part] = tonumber(redis.call('HGET', FENCE, part) or '-1')  -- as stored at the start
  end
  for _, f in ipairs(group[3]) do
    local o, at, xd, segs = f[1], f[2], f[3], f[6]
    local left = f[5] > 0 and ARGV[11 + f[5]] or ''
    local cd = f[4] ~= 0 and f[4] or nil
    if o > fences[part] then
      applied = applied + 1
      local p = pend[customer]
      if p then
        if p.xd and at > p.xd then exit_of(p) end
        if p.cd and at > p.cd then abandon(p) end
      end
      if cd and p and p.cd then
        cd = math.max(cd, p.cd)  -- the same cart: a late event never moves its deadline back
      elseif cd then
        cd = math.max(cd, at + abandon_after)  -- a cart kept after it was abandoned starts again
      end
      local now = {xd = xd, cd = cd, leaving = left}
      if left == '' then now.leaving = p and p.leaving or nil end
      pend[customer] = now
      mark(customer, now, part)
      for _, field in ipairs(f[7] or NONE) do add(counts, map, at, segs, field, 1) end
      for _, stage in ipairs(f[8] or NONE) do visit(map, at, segs, stage, customer) end
      for _, key in ipairs(f[9] or NONE) do add(touches, map, at, segs, 'p|' .. key, 1) end
      for _, key in ipairs(f[10] or NONE) do add(touches, map, at, segs, 'k|' .. key, 1) end
      if highest[part] == nil or o > highest[part] then highest[part] = o end
      if newest[part] == nil or at > newest[part] then newest[part] = at end
      sweep[part] = true
    end
  end
end
for part, top in pairs(highest) do redis.call('HSET', FENCE, part, num(top)) end
for part, at in pairs(newest) do
  local clock = redis.call('HGET', CLOCK, part)
  if not clock or at > tonumber(clock) then redis.call('HSET', CLOCK, part, num(at)) end
end

-- the watermark (newest event time minus the lateness) decides who left without a word
local function resolve(customer, p, part, until_at)
  if p.xd and p.xd < until_at then exit_of(p) end
  if p.cd and p.cd < until_at then abandon(p) end
  mark(customer, p, part)
end
local function due(part, kind, until_at)
  local index = base .. kind .. ':' .. part
  local found = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. num(until_at),
    'LIMIT', 0, sweep_limit)
  load(found)
  local gone = {}
  for _, customer in ipairs(found) do
    local p = pend[customer]
    if p then resolve(customer, p, part, until_at) else gone[#gone + 1] = customer end
  end
  each_chunk('ZREM', index, gone)
  return #found >= sweep_limit
end
local backlog, recorded = {}, #changed
for part in pairs(sweep) do
  local clock = tonumber(redis.call('HGET', CLOCK, part) or '')
  if clock then
    local until_at = clock - lateness
    for j = 1, recorded do  -- deadlines this call set are not indexed yet
      local p = pend[changed[j]]
      if p.part == part then resolve(changed[j], p, part, until_at) end
    end
    local more = due(part, 'exits', until_at)
    if due(part, 'carts', until_at) or more then backlog[#backlog + 1] = part end
  end
end
local kept, dropped_records, index_add, index_drop = {}, {}, {}, {}
local function push(tbl, key, ...)
  local list = tbl[key]
  if not list then list = {}; tbl[key] = list end
  for _, v in ipairs({...}) do list[#list + 1] = v end
end
for _, customer in ipairs(changed) do
  local p = pend[customer]
  local x_index, c_index = base .. 'exits:' .. p.part, base .. 'carts:' .. p.part
  if (p.xd or p.cd) and p.leaving then
    local head = (p.xd and num(p.xd) or '-') .. ' ' .. (p.cd and num(p.cd) or '-')
    kept[#kept + 1] = customer
    kept[#kept + 1] = head .. ' ' .. p.leaving
  else
    dropped_records[#dropped_records + 1] = customer
    p.xd, p.cd = nil, nil
  end
  local was = indexed[customer] or {}
  if p.xd then push(index_add, x_index, num(p.xd), customer)
  elseif was.x then push(index_drop, x_index, customer) end
  if p.cd then push(index_add, c_index, num(p.cd), customer)
  elseif was.c then push(index_drop, c_index, customer) end
end
each_chunk('HSET', PENDING, kept)
each_chunk('HDEL', PENDING, dropped_records)
for index, items in pairs(index_add) do each_chunk('ZADD', index, items) end
for index, items in pairs(index_drop) do each_chunk('ZREM', index, items) end

local clock = -1
for _, v in ipairs(redis.call('HVALS', CLOCK)) do clock = math.max(clock, tonumber(v)) end

-- expand the sums to per-bucket keys; a bucket past its retention (event time) is not written
local lists = {}
local function segments(segs)
  local list = lists[segs]
  if not list then
    list = {'all'}
    for s in string.gmatch(segs, '%S+') do list[#list + 1] = s end
    lists[segs] = list
  end
  return list
end
local buckets, made, dropped = {}, {}, {}
local function key_of(kind, m, g, bucket, seg, suffix)
  local id = m .. ':' .. g .. ':' .. num(bucket)
  local key = base .. kind .. ':' .. id .. ':' .. seg .. suffix
  if not made[key] then
    made[key] = true
    local entry = buckets[id]
    if not entry then
      entry = {g = g, bucket = bucket, keys = {}}
      buckets[id] = entry
    end
    entry.keys[#entry.keys + 1] = key
  end
  return key
end
local function expand(tbl, each)
  for m, by_hour in pairs(tbl) do
    for hour, by_segs in pairs(by_hour) do
      for _, g in ipairs({'h', 'd'}) do
        local bucket = hour - hour % SIZE[g]
        if bucket + KEEP[g] > clock then
          for segs, fields in pairs(by_segs) do
            for _, seg in ipairs(segments(segs)) do each(m, g, bucket, seg, fields) end
          end
        else
          dropped[m .. ':' .. g .. ':' .. num(bucket)] = true
        end
      end
    end
  end
end
local function summed(tbl, kind)
  local out = {}
  expand(tbl, function(m, g, bucket, seg, fields)
    local key = key_of(kind, m, g, bucket, seg, '')
    local into = out[key]
    if not into then into = {}; out[key] = into end
    for field, n in pairs(fields) do into[field] = (into[field] or 0) + n end
  end)
  return out
end
for key, fields in pairs(summed(counts, 'c')) do add_all(key, fields) end
for key, fields in pairs(summed(touches, 't')) do
  local size, names, pooled = redis.call('HLEN', key), {}, {}
  for field in pairs(fields) do names[#names + 1] = field end
  for from = 1, #names, 500 do
    local part = {unpack(names, from, math.min(from + 499, #names))}
    for j, current in ipairs(redis.call('HMGET', key, unpack(part))) do
      local field = part[j]
      if not current then
        if size >= max_touch then
          field = string.match(field, '^(%a|[^|]*|[^|]*|)') .. '*'  -- by type and channel
        else
          size = size + 1
        end
      end
      pooled[field] = (pooled[field] or 0) + fields[part[j]]
    end
  end
  add_all(key, pooled)
end
local who_by_key = {}
expand(visits, function(m, g, bucket, seg, stages)
  for stage, who in pairs(stages) do
    local key = key_of('u', m, g, bucket, seg, ':' .. stage)
    local into = who_by_key[key]
    if not into then into = {}; who_by_key[key] = into end
    for customer in pairs(who) do into[customer] = true end
  end
end)
for key, who in pairs(who_by_key) do
  local list = {}
  for customer in pairs(who) do list[#list + 1] = customer end
  each_chunk('PFADD', key, list)
end

-- every bucket's keys are listed under it and the bucket indexed by when it expires, in
-- event time; the wall-clock TTL only backs that up when events stop
for id, entry in pairs(buckets) do
  local listing, ttl = base .. 'keys:' .. id, KEEP[entry.g]
  redis.call('ZADD', EXPIRY, num(entry.bucket + ttl), id)
  each_chunk('SADD', listing, entry.keys)
  for _, key in ipairs(entry.keys) do redis.call('PEXPIRE', key, ttl) end
  redis.call('PEXPIRE', listing, ttl)
end
local expired = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', num(clock), 'LIMIT', 0, prune_limit)
for _, id in ipairs(expired) do
  local listing = base .. 'keys:' .. id
  local keys = redis.call('SMEMBERS', listing)
  for from = 1, #keys, 1000 do
    redis.call('DEL', unpack(keys, from, math.min(from + 999, #keys)))
  end
  redis.call('DEL', listing)
  redis.call('ZREM', EXPIRY, id)
end
local n_dropped = 0
for _ in pairs(dropped) do n_dropped = n_dropped + 1 end
return {applied, exits, carts, n_dropped, backlog}
"""

READ: Final = """
-- KEYS: clock
-- ARGV: base, map, granularity (h|d), segment, #buckets, bucket starts..., #cover,
--   '<h|d>:<start>'... (buckets that together hold exactly the range: whole days as days),
--   #stages, stages... (distinct customers entering them over the range, and per bucket
--   if the next argument is 1), touches wanted (0: none,
--   1: summed, r: per bucket), #fields, fields... and #prefixes, prefixes... (what is
--   returned per bucket)
-- returns: summed counters, per bucket the wanted fields, summed touches, per bucket each
--   stage's distinct customers, each stage's over the range, the clocks, per bucket the
--   touches
local base, map, g, seg = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local at = 5
local function list()
  local n, out = tonumber(ARGV[at]), {}
  for j = 1, n do out[j] = ARGV[at + j] end
  at = at + n + 1
  return out
end
local starts, cover, stages = list(), list(), list()
local bucket_customers = ARGV[at] == '1'
at = at + 1
local with_touches, touch_rows = ARGV[at] == '1', ARGV[at] == 'r'
at = at + 1
local fields, prefixes = list(), list()
local n = #starts

local function key(kind, gran, start)
  return base .. kind .. ':' .. map .. ':' .. gran .. ':' .. start .. ':' .. seg
end
local function cover_key(kind, id)
  return base .. kind .. ':' .. map .. ':' .. id .. ':' .. seg
end
local function flat(tbl)
  local out = {}
  for k, v in pairs(tbl) do
    out[#out + 1] = k
    out[#out + 1] = v
  end
  return out
end
local function add_pairs(sums, kv)
  for k = 1, #kv, 2 do sums[kv[k]] = (sums[kv[k]] or 0) + tonumber(kv[k + 1]) end
end

local totals = {}
for _, id in ipairs(cover) do add_pairs(totals, redis.call('HGETALL', cover_key('c', id))) end

local series, sub = {}, string.sub
local widths = {}
for i, prefix in ipairs(prefixes) do widths[i] = #prefix end
for j = 1, n do
  local row = {}
  series[j] = row
  local c = key('c', g, starts[j])
  if #fields > 0 then
    for i, v in ipairs(redis.call('HMGET', c, unpack(fields))) do
      if v then
        row[#row + 1] = fields[i]
        row[#row + 1] = tonumber(v)
      end
    end
  end
  if #prefixes > 0 then
    local kv = redis.call('HGETALL', c)
    for k = 1, #kv, 2 do
      local field = kv[k]
      for i, prefix in ipairs(prefixes) do
        if sub(field, 1, widths[i]) == prefix then
          row[#row + 1] = field
          row[#row + 1] = tonumber(kv[k + 1])
          break
        end
      end
    end
  end
end

local touches = {}
if with_touches then  -- per bucket: a day pools rare targets sooner than its hours do
  for j = 1, n do add_pairs(touches, redis.call('HGETALL', key('t', g, starts[j]))) end
end

local rows = {}
if touch_rows then
  for j = 1, n do rows[j] = redis.call('HGETALL', key('t', g, starts[j])) end
end

local per_bucket, over_range = {}, {}
if bucket_customers and #stages > 0 then
  for j = 1, n do per_bucket[j] = {} end
end
for k, stage in ipairs(stages) do
  if bucket_customers then
    for j = 1, n do
      per_bucket[j][k] = redis.call('PFCOUNT', key('u', g, starts[j]) .. ':' .. stage)
    end
  end
  local keys = {}
  for i, id in ipairs(cover) do keys[i] = cover_key('u', id) .. ':' .. stage end
  over_range[k] = #keys > 0 and redis.call('PFCOUNT', unpack(keys)) or 0
end
return {flat(totals), series, flat(touches), per_bucket, over_range,
  redis.call('HGETALL', KEYS[1]), rows}
"""
