"""The Lua that keeps the catalog models in Redis: the same arithmetic as `models.cooccurrence`
and `models.trending`, step for step, so Redis and the pure models agree to the last bit or so
(Lua's `2 ^ x` and Python's `exp2` can differ in the last place).

Numbers cross into Redis as `%.17g` strings (Lua's own `tostring` keeps only 14 digits), and
counts are read, added and written back rather than `HINCRBYFLOAT`ed, which rounds through
long double and prints fixed-point. Ties rank by item id, compared byte by byte (Lua's `<` on
strings follows the server's locale); UTF-8 byte order is code point order, Python's order.
Item keys are built from ids inside the scripts, so they need standalone Redis (or Sentinel).
"""

from __future__ import annotations

from typing import Final

_COMMON: Final = """
local function num(x)
  return string.format('%.17g', x)
end

local function growth(h, at, ref)
  if h == 0 then return 1.0 end
  return 2 ^ ((at - ref) / h)
end

local function shrink(h, at, ref)
  if h == 0 then return 1.0 end
  return 2 ^ (-math.max(at - ref, 0) / h)
end

local function bytes_lt(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- rows are {id, score}: highest score first, ties by smaller id (models.trending.top_scored)
local function ranked(x, y)
  if x[2] ~= y[2] then return x[2] > y[2] end
  return bytes_lt(x[1], y[1])
end

-- every item's decayed n (0 when unknown) and its row's shrink factor at `clock`, read in
-- chunks (Lua's unpack has a stack limit)
local function decayed_counts(n_key, ref_key, items, pair_h, clock)
  local count, row_shrink = {}, {}
  for from = 1, #items, 1000 do
    local chunk = {}
    for j = from, math.min(from + 999, #items) do chunk[#chunk + 1] = items[j] end
    local ns = redis.call('HMGET', n_key, unpack(chunk))
    local refs = redis.call('HMGET', ref_key, unpack(chunk))
    for j, item in ipairs(chunk) do
      if ns[j] and refs[j] then
        row_shrink[item] = shrink(pair_h, clock, tonumber(refs[j]))
        count[item] = tonumber(ns[j]) * row_shrink[item]
      else
        count[item] = 0.0
      end
    end
  end
  return count, row_shrink
end

-- an ordered set: `add(item)` appends `item` to `list` the first time it is seen
local function collector()
  local list, seen = {}, {}
  local function add(item)
    if not seen[item] then
      seen[item] = true
      list[#list + 1] = item
    end
  end
  return list, add
end

-- the `n` best members of `key`, fetching every member tied with the n-th when there are any
local function best(key, n)
  if n <= 0 then return {} end
  local flat = redis.call('ZREVRANGE', key, 0, n, 'WITHSCORES')
  if #flat > 2 * n and flat[2 * n] == flat[2 * n + 2] then
    flat = redis.call('ZREVRANGEBYSCORE', key, '+inf', flat[2 * n], 'WITHSCORES')
  end
  local rows, tied = {}, false
  for j = 1, #flat, 2 do
    rows[#rows + 1] = {flat[j], tonumber(flat[j + 1])}
    tied = tied or (j > 1 and flat[j + 1] == flat[j - 1])
  end
  if tied then table.sort(rows, ranked) end  -- Redis lists ties by greater id first
  for j = #rows, n + 1, -1 do rows[j] = nil end
  return rows
end
"""

LEARN: Final = (
    _COMMON
    + """
-- KEYS: fence, clock, n, ref, trending refs, trending overall
-- ARGV: key base, pair half-life, trending half-life (0: no decay), top_k, top_n,
--   renormalise after (half-lives); then per update: partition, offset, at,
--   #added, added..., #existing, existing..., #trending, (item, category or '', weight)...
local FENCE, CLOCK, N, REF, TREF, TOP = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local base, pair_h, top_h = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local top_k, top_n, drift = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

-- keep the `keep` best members of `key`; members tied at the cut are kept by smaller id
local function prune(key, keep)
  local drop = redis.call('ZCARD', key) - keep
  if drop <= 0 then return end
  local edge = redis.call('ZRANGE', key, drop - 1, drop, 'WITHSCORES')
  if tonumber(edge[2]) < tonumber(edge[4]) then
    redis.call('ZREMRANGEBYRANK', key, 0, drop - 1)
    return
  end
  local cut = edge[2]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. cut)
  local room = keep - redis.call('ZCOUNT', key, '(' .. cut, '+inf')
  local tied = redis.call('ZRANGEBYSCORE', key, cut, cut)
  for i = room + 1, #tied do redis.call('ZREM', key, tied[i]) end
end

-- an item's reference time, after renormalising its row if `at` drifted too far; nil: no row
local function row_ref(item, at, at_s)
  local ref = redis.call('HGET', REF, item)
  if not ref then return nil end
  ref = tonumber(ref)
  if pair_h == 0 or at - ref <= drift * pair_h then return ref end
  local f = shrink(pair_h, at, ref)
  local key = base .. 'pairs:' .. item
  redis.call('HSET', N, item, num(tonumber(redis.call('HGET', N, item)) * f))
  redis.call('ZUNIONSTORE', key, 1, key, 'WEIGHTS', num(f))
  redis.call('HSET', REF, item, at_s)
  return at
end

local function add_pairs(item, others, step)
  local key, s = base .. 'pairs:' .. item, num(step)
  for _, other in ipairs(others) do
    if other ~= item then redis.call('ZINCRBY', key, s, other) end
  end
  prune(key, top_k)
end

local function learn_addition(added, existing, at, at_s)
  local basket = {}
  for _, a in ipairs(added) do basket[#basket + 1] = a end
  for _, b in ipairs(existing) do basket[#basket + 1] = b end
  for _, a in ipairs(added) do
    local ref = row_ref(a, at, at_s)
    if not ref then
      ref = at
      redis.call('HSET', REF, a, at_s)
    end
    local step = growth(pair_h, at, ref)
    redis.call('HSET', N, a, num(tonumber(redis.call('HGET', N, a) or '0') + step))
    add_pairs(a, basket, step)
  end
  for _, b in ipairs(existing) do
    local ref = row_ref(b, at, at_s)
    if ref then add_pairs(b, added, growth(pair_h, at, ref)) end
  end
end

-- per scope, read once per call: its reference time, and a bound on its list's size (the
-- size when read plus the increments since; ZCARD is asked only once the bound passes)
local scope_ref, size_bound = {}, {}
local function popular(scope, key, item, weight, at, at_s)
  local ref = scope_ref[scope]
  if ref == nil then
    ref = tonumber(redis.call('HGET', TREF, scope) or '')
    if not ref then
      ref = at
      redis.call('HSET', TREF, scope, at_s)
    end
  end
  if top_h ~= 0 and at - ref > drift * top_h then
    redis.call('ZUNIONSTORE', key, 1, key, 'WEIGHTS', num(shrink(top_h, at, ref)))
    redis.call('HSET', TREF, scope, at_s)
    ref = at
  end
  scope_ref[scope] = ref
  redis.call('ZINCRBY', key, num(weight * growth(top_h, at, ref)), item)
  local bound = (size_bound[key] or redis.call('ZCARD', key) - 1) + 1
  if bound > 2 * top_n then
    bound = redis.call('ZCARD', key)
    if bound > 2 * top_n then
      prune(key, top_n)
      bound = top_n
    end
  end
  size_bound[key] = bound
end

local function slice(from, count)
  local out = {}
  for j = from, from + count - 1 do out[#out + 1] = ARGV[j] end
  return out
end

local fences, highest, done = {}, {}, {}
local applied, newest, newest_s = 0, nil, nil
local i = 7
while i <= #ARGV do
  local p, o_s, at_s = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local o, at = tonumber(o_s), tonumber(at_s)
  local n_added = tonumber(ARGV[i + 3])
  local e = i + 4 + n_added
  local n_existing = tonumber(ARGV[e])
  local t = e + 1 + n_existing
  local n_trending = tonumber(ARGV[t])
  if fences[p] == nil then
    fences[p] = tonumber(redis.call('HGET', FENCE, p) or '-1')  -- as stored at the start
  end
  local position = p .. ' ' .. o_s
  if o > fences[p] and (newest == nil or at > newest) then
    newest, newest_s = at, at_s  -- an update without lessons (a clock tick) only moves this
  end
  if o > fences[p] and not done[position] and (n_added > 0 or n_trending > 0) then
    done[position] = true
    applied = applied + 1
    if n_added > 0 then
      learn_addition(slice(i + 4, n_added), slice(e + 1, n_existing), at, at_s)
    end
    for j = t + 1, t + 3 * n_trending, 3 do
      local item, category, weight = ARGV[j], ARGV[j + 1], tonumber(ARGV[j + 2])
      popular('', TOP, item, weight, at, at_s)
      if category ~= '' then
        popular(category, base .. 'top:' .. category, item, weight, at, at_s)
      end
    end
  end
  if o > fences[p] and (highest[p] == nil or o > highest[p][1]) then highest[p] = {o, o_s} end
  i = t + 1 + 3 * n_trending
end
for p, top in pairs(highest) do redis.call('HSET', FENCE, p, top[2]) end
if newest ~= nil then
  local clock = redis.call('GET', CLOCK)
  if not clock or newest > tonumber(clock) then redis.call('SET', CLOCK, newest_s) end
end
return applied
"""
)

READ: Final = (
    _COMMON
    + """
-- KEYS: journey, clock, n, ref, trending refs, trending overall
-- ARGV: key base, product id ('': none), category ('': none), max_seeds, per_seed,
--   min_support, bought_window_ms, accessories, trending, pair half-life,
--   trending half-life (0: no decay), journey schema version, forgotten
local CLOCK, N, REF, TREF, TOP = KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local base, product, category = ARGV[1], ARGV[2], ARGV[3]
local max_seeds, per_seed = tonumber(ARGV[4]), tonumber(ARGV[5])
local min_support, window = tonumber(ARGV[6]), tonumber(ARGV[7])
local n_accessories, n_trending = tonumber(ARGV[8]), tonumber(ARGV[9])
local pair_h, top_h = tonumber(ARGV[10]), tonumber(ARGV[11])
local schema, forgotten = tonumber(ARGV[12]), tonumber(ARGV[13])

-- the journey's state, if it is one this script knows how to read (see service.catalog)
local function journey(raw)
  if not raw then return nil end
  local space = string.find(raw, ' ', 1, true)
  if not space then return nil end
  local ok, state = pcall(cjson.decode, string.sub(raw, space + 1))
  if not ok or type(state) ~= 'table' or state.v ~= schema then return nil end
  return state
end

local raw = redis.call('GET', KEYS[1])
local state = journey(raw)
local clock = tonumber(redis.call('GET', CLOCK) or '0')

local seeds, kinds, is_seed, banned, in_cart, n_cart = {}, {}, {}, {}, {}, 0
local function seed(item, kind)
  if #seeds < max_seeds and not is_seed[item] then
    kinds[#seeds + 1] = kind
    seeds[#seeds + 1] = item
    is_seed[item], banned[item] = true, true
  end
end
if product ~= '' then seed(product, 'viewed') end
if state then
  local items = state.cart[1]
  for j = #items, 1, -1 do
    local id = items[j][1]
    in_cart[id], banned[id], n_cart = true, true, n_cart + 1
    seed(id, 'cart')
  end
  local recent, since = state.purchases[6], state.last_event_at - window
  for j = #recent, 1, -1 do
    local id = recent[j][1]
    if recent[j][2] >= since then banned[id] = true end
    seed(id, 'bought')
  end
  if category == '' then
    local most = nil
    for name, views in pairs(state.category_views) do
      if most == nil or views > most or (views == most and bytes_lt(name, category)) then
        category, most = name, views
      end
    end
  end
end

local neighbours = {}
local want, need = collector()
for j, s in ipairs(seeds) do
  need(s)
  neighbours[j] = best(base .. 'pairs:' .. s, per_seed)
  for _, row in ipairs(neighbours[j]) do
    if not banned[row[1]] then need(row[1]) end
  end
end

local count, row_shrink = decayed_counts(N, REF, want, pair_h, clock)

local totals, credit, order = {}, {}, {}
for j, s in ipairs(seeds) do
  local n_a = count[s]
  if n_a >= forgotten then
    for _, row in ipairs(neighbours[j]) do
      local b = row[1]
      local pair = row[2] * row_shrink[s]
      if not banned[b] and pair >= min_support and count[b] >= forgotten then
        local score = pair / math.sqrt(n_a * count[b])
        if totals[b] == nil then
          totals[b], credit[b] = score, {score, j}
          order[#order + 1] = b
        else
          totals[b] = totals[b] + score
          if score > credit[b][1] then credit[b] = {score, j} end
        end
      end
    end
  end
end
local candidates = {}
for _, b in ipairs(order) do candidates[#candidates + 1] = {b, totals[b]} end
table.sort(candidates, ranked)
local accessories = {}
for j = 1, math.min(n_accessories, #candidates) do
  local b, by = candidates[j][1], credit[candidates[j][1]][2]
  for _, v in ipairs({b, num(candidates[j][2]), seeds[by], kinds[by]}) do
    accessories[#accessories + 1] = v
  end
end

local function trending(scope, key)
  local ref = redis.call('HGET', TREF, scope)
  if n_trending <= 0 or not ref then return {} end
  local f, out = shrink(top_h, clock, tonumber(ref)), {}
  for _, row in ipairs(best(key, n_trending + n_cart)) do
    if #out < 2 * n_trending and not in_cart[row[1]] then
      out[#out + 1] = row[1]
      out[#out + 1] = num(row[2] * f)
    end
  end
  return out
end

local in_category = {}
if category ~= '' then in_category = trending(category, base .. 'top:' .. category) end
return {
  raw or false, category ~= '' and category or false,
  accessories, trending('', TOP), in_category, num(clock),
}
"""
)

NEIGHBOURS: Final = (
    _COMMON
    + """
-- What a cache of the catalog holds: per item, its neighbours scored by cosine (decayed to
-- the clock, `min_support` applied, nothing excluded: exclusions are per request); per
-- trending scope ('' overall, else a category), its best items with decayed scores.
-- KEYS: clock, n, ref, trending refs
-- ARGV: key base, per_seed, min_support, trending, pair half-life, trending half-life,
--   forgotten, item count, items..., scope count, scopes...
local CLOCK, N, REF, TREF = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local base = ARGV[1]
local per_seed, min_support, n_trending = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local pair_h, top_h, forgotten = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local n_items = tonumber(ARGV[8])
local items, scopes = {}, {}
for j = 1, n_items do items[j] = ARGV[8 + j] end
for j = 1, tonumber(ARGV[9 + n_items]) do scopes[j] = ARGV[9 + n_items + j] end
local clock = tonumber(redis.call('GET', CLOCK) or '0')

local lists = {}
local want, need = collector()
for j, s in ipairs(items) do
  need(s)
  lists[j] = best(base .. 'pairs:' .. s, per_seed)
  for _, row in ipairs(lists[j]) do need(row[1]) end
end

local count, row_shrink = decayed_counts(N, REF, want, pair_h, clock)

local per_item = {}
for j, s in ipairs(items) do
  local flat, n_a = {}, count[s]
  if n_a >= forgotten then
    for _, row in ipairs(lists[j]) do
      local b = row[1]
      local pair = row[2] * row_shrink[s]
      if b ~= s and pair >= min_support and count[b] >= forgotten then
        flat[#flat + 1] = b
        flat[#flat + 1] = num(pair / math.sqrt(n_a * count[b]))
      end
    end
  end
  per_item[j] = flat
end

local per_scope = {}
for j, scope in ipairs(scopes) do
  local key = scope == '' and (base .. 'top') or (base .. 'top:' .. scope)
  local ref, flat = redis.call('HGET', TREF, scope), {}
  if ref and n_trending > 0 then
    local f = shrink(top_h, clock, tonumber(ref))
    for _, row in ipairs(best(key, n_trending)) do
      flat[#flat + 1] = row[1]
      flat[#flat + 1] = num(row[2] * f)
    end
  end
  per_scope[j] = flat
end
return {num(clock), per_item, per_scope}
"""
)
