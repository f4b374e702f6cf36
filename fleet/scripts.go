package fleet

import "github.com/redis/go-redis/v9"

// The scripts run in the store, each one atomic, so two nodes can never
// both pass a threshold that one attempt more would cross. They mirror
// the in-memory guard (guard/guard.go, guard/flight.go) rule for rule;
// where they differ, docs/fleet.md says so.
//
// Key layout (keys.go builds the names; every script receives them as
// KEYS, none builds a key itself):
//
//	 1 fi   failures of the address         ZSET hash -> ms (guard.window)
//	 2 fp   failures of (login, address)    ZSET hash -> ms (guard.window)
//	 3 fl   failures of the login           ZSET hash -> ms (lockout.window)
//	 4 li   leases on the address           ZSET lease -> expiry ms
//	 5 lp   leases on (login, address)      ZSET lease -> expiry ms
//	 6 ll   leases on the login             ZSET lease -> expiry ms
//	 7 e    exemption of the address        STRING expiry ms, PX
//	 8 k    lockout of the login            STRING until|created|compromised|reason
//	 9 n    networks the login succeeded in ZSET network -> ms
//	10 b    ban of the address              STRING until|created|manual|offence|reason, PX
//	11 o    offences of the address         STRING count|last, PX forget_after
//	12 c    countries of the login          ZSET country -> ms
//	13 bans index of bans                   ZSET prefix -> until ms
//	14 locks index of lockouts              ZSET login -> until ms (compromised: +inf)
//	15 feed change feed                     STREAM op, p, v
//	16 fx   pair windows of the login       ZSET address -> ms (guard.window)
//	17 waits lease sets waited on           ZSET lease set key -> ms (mark end)
//	then per counted network: fn (failures), ln (leases), b (ban), o (offences)
//
// Times are milliseconds since the epoch, from the node (ARGV), so one
// clock decides an attempt as in the in-memory guard.

const luaCommon = `
local now = tonumber(ARGV[1])
local NB = 17 -- the last fixed key; the networks' keys follow
local function fails(k, span)
  return redis.call('ZCOUNT', k, '(' .. (now - span), '+inf')
end
-- Leases not yet ended (one command: a lease a dead node left behind is
-- not counted, and goes with its set, which expires a lease after the
-- last reservation in it).
local function inflight(k)
  return redis.call('ZCOUNT', k, '(' .. now, '+inf')
end
local function banBlocks(k, exempt)
  local v = redis.call('GET', k)
  if not v then return nil end
  local u, manual = string.match(v, '^(%d+)|%d+|(%d)|')
  if not u or tonumber(u) <= now then return nil end
  if manual == '1' or not exempt then return v end
  return nil
end
local function isExempt(k)
  local v = redis.call('GET', k)
  return v ~= false and tonumber(v) > now
end
local function known(k, home, span)
  if span <= 0 then return false end
  local s = redis.call('ZSCORE', k, home)
  return s ~= false and now - tonumber(s) < span
end
`

// beginScript decides an attempt and reserves it.
//
// ARGV: 1 now, 2 lease, 3 lease expiry, 4 home network, 5 window,
// 6 lockout.window, 7 per_ip_after, 8 lockout.after, 9 ip_after,
// 10 exemption.max_failures, 11 network_after, 12 remember_success,
// 13 number of networks, 14 lease ms, 15 how long a wait mark lasts.
//
// A wait (code 2) marks the lease set that holds the attempt back in
// waits, so that finishScript announces its releases.
//
// Returns {code, reason, address failures, pair failures}; code 0:
// allowed and reserved, 1: refused, 2: wait for attempts in flight,
// 3: the login is locked, 4: banned.
var beginScript = redis.NewScript(luaCommon + `
local win = tonumber(ARGV[5])
local nip = fails(KEYS[1], win)
local npair = fails(KEYS[2], win)
local exempt = isExempt(KEYS[7])
local nn = tonumber(ARGV[13])
local b = banBlocks(KEYS[10], exempt)
for i = 1, nn do
  if b then break end
  b = banBlocks(KEYS[NB + 4 * (i - 1) + 3], exempt)
end
if b then return {4, b, nip, npair} end
local remember = tonumber(ARGV[12])
local home = ARGV[4]
local isKnown = known(KEYS[9], home, remember)
local l = redis.call('GET', KEYS[8])
if l then
  local u, comp, why = string.match(l, '^(%d+)|%d+|(%d)|(.*)$')
  if comp == '1' then return {3, 'login locked as compromised: ' .. why, nip, npair} end
  if tonumber(u) > now and not isKnown then return {3, 'login locked: ' .. why, nip, npair} end
end
local wait = 0
local reason = ''
local waitKey
local function over(f, lk, lim, what)
  if lim <= 0 then return false end
  local fl = inflight(lk)
  if f + fl < lim then return false end
  if f < lim and fl > 0 then wait = 1; waitKey = lk end
  reason = f .. ' failures and ' .. fl .. ' attempts in flight ' .. what
  return true
end
local function deny()
  if wait == 1 then
    local mark = tonumber(ARGV[15])
    redis.call('ZREMRANGEBYSCORE', KEYS[17], '-inf', now)
    redis.call('ZADD', KEYS[17], now + mark, waitKey)
    redis.call('PEXPIRE', KEYS[17], mark)
    return {2, reason, nip, npair}
  end
  return {1, reason, nip, npair}
end
if over(npair, KEYS[5], tonumber(ARGV[7]), 'for this login from this address') then return deny() end
local lockAfter = tonumber(ARGV[8])
local lock = lockAfter > 0 and not isKnown
if lock and over(fails(KEYS[3], tonumber(ARGV[6])), KEYS[6], lockAfter, 'for this login') then return deny() end
local ipLim = tonumber(ARGV[9])
if exempt then ipLim = tonumber(ARGV[10]) end
if over(nip, KEYS[4], ipLim, 'from this address') then return deny() end
local netAfter = tonumber(ARGV[11])
if not exempt and netAfter > 0 then
  for i = 1, nn do
    local base = NB + 4 * (i - 1)
    if over(fails(KEYS[base + 1], win), KEYS[base + 2], netAfter, 'from the network') then return deny() end
  end
end
local lease, exp, ms = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[14])
local function reserve(k)
  -- Leases of nodes that died end here: inflight only counts the live
  -- ones, so without this a busy set keeps every expired member.
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
  redis.call('ZADD', k, exp, lease)
  redis.call('PEXPIRE', k, ms)
end
reserve(KEYS[4])
reserve(KEYS[5])
if lock then reserve(KEYS[6]) end
for i = 1, nn do reserve(KEYS[NB + 4 * (i - 1) + 2]) end
return {0, '', nip, npair}
`)

// finishScript records an attempt's outcome and releases its lease.
//
// ARGV: 1 now, 2 lease, 3 outcome (p passed, w wrong password, r refused,
// e backend error, a abandoned), 4 hash, 5 home network, 6 country,
// 7 login, 8 number of networks, 9 window, 10 lockout.window,
// 11 lockout.after, 12 lockout.duration, 13 ban.ip_after,
// 14 ban.network_after, 15 ban.duration, 16 ban.factor, 17 ban.max,
// 18 ban.forget_after, 19 exemption.duration, 20 exemption.max_failures,
// 21 lockout.remember_success, 22 compromise.countries,
// 23 compromise.window, 24 compromise.deny (0/1), 25-28 keep (address,
// network, login, pair), 29 feed length, 30 window text, 31 lockout
// window text, 32 compromise window text, 33 the address as a prefix,
// 34 the wake channel, 35 the wake message, then the networks as
// prefixes.
//
// Releasing a lease set that an attempt waits on (marked in waits by
// beginScript) publishes the wake message, so the nodes wake their
// waiters instead of polling.
//
// Returns the events: {kind, prefix or login, until, duration, failures,
// offence, reason, refuse, countries}; kind B banned, L locked,
// C compromised. First, when a wake-up was due, the string P (published)
// or W (the store refused ZMSCORE or PUBLISH: the user lacks them).
var finishScript = redis.NewScript(luaCommon + `
local lease, outcome, h, home = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local country, login, nn = ARGV[6], ARGV[7], tonumber(ARGV[8])
redis.call('ZREM', KEYS[4], lease)
redis.call('ZREM', KEYS[5], lease)
redis.call('ZREM', KEYS[6], lease)
for i = 1, nn do redis.call('ZREM', KEYS[NB + 4 * (i - 1) + 2], lease) end
local wake = ''
if lease ~= '' then
  local sets = {KEYS[4], KEYS[5], KEYS[6]}
  for i = 1, nn do table.insert(sets, KEYS[NB + 4 * (i - 1) + 2]) end
  -- pcall: a store user without these commands (the ACL before the
  -- wake channel) only loses the wake-ups, never the attempt; the node
  -- is told (W), and polls.
  local marks = redis.pcall('ZMSCORE', KEYS[17], unpack(sets))
  if type(marks) == 'table' and marks.err then
    wake = 'W'
  elseif type(marks) == 'table' then
    for i = 1, #sets do
      local m = marks[i]
      if m and tonumber(m) > now then
        local r = redis.pcall('PUBLISH', ARGV[34], ARGV[35])
        if type(r) == 'table' and r.err then wake = 'W' else wake = 'P' end
        break
      end
    end
  end
end
if outcome == 'a' then
  if wake ~= '' then return {wake} end
  return {}
end
local win, lockWin = tonumber(ARGV[9]), tonumber(ARGV[10])
local remember = tonumber(ARGV[21])
local feedLen = ARGV[29]
local ev = {}
if wake ~= '' then table.insert(ev, wake) end
local function addWin(k, span, keep)
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now - span)
  redis.call('ZADD', k, now, h)
  local n = redis.call('ZCARD', k)
  if n > keep then
    redis.call('ZREMRANGEBYRANK', k, 0, n - keep - 1)
    n = keep
  end
  redis.call('PEXPIRE', k, span)
  return n
end
local function trim(k, limit)
  local n = redis.call('ZCARD', k)
  if n > limit then
    redis.call('ZREMRANGEBYRANK', k, 0, n - limit - 1)
    n = limit
  end
  return n
end
if outcome == 'p' then
  redis.call('DEL', KEYS[2])
  local exDur = tonumber(ARGV[19])
  if exDur > 0 then redis.call('SET', KEYS[7], now + exDur, 'PX', exDur) end
  if remember > 0 then
    redis.call('ZADD', KEYS[9], now, home)
    trim(KEYS[9], 8)
    redis.call('PEXPIRE', KEYS[9], remember)
  end
  local ccN, ccWin = tonumber(ARGV[22]), tonumber(ARGV[23])
  if ccN > 0 and string.match(country, '^[A-Z][A-Z]$') then
    redis.call('ZREMRANGEBYSCORE', KEYS[12], '-inf', now - ccWin)
    local isNew = redis.call('ZADD', KEYS[12], now, country) == 1
    local n = trim(KEYS[12], 16)
    redis.call('PEXPIRE', KEYS[12], ccWin)
    if isNew and n > ccN then
      local ccs = redis.call('ZRANGE', KEYS[12], 0, -1)
      local reason = 'logins from ' .. n .. ' countries within ' .. ARGV[32]
      local refuse = 0
      if ARGV[24] == '1' then
        redis.call('SET', KEYS[8], '0|' .. now .. '|1|' .. reason)
        redis.call('ZADD', KEYS[14], '+inf', login)
        refuse = 1
      end
      table.insert(ev, {'C', login, 0, 0, 0, 0, reason, refuse, table.concat(ccs, ',')})
    end
  end
  return ev
end
local exempt = isExempt(KEYS[7])
if outcome == 'w' then
  addWin(KEYS[2], win, tonumber(ARGV[28]))
  -- The login's index of its (login, address) windows, for Unlock.
  redis.call('ZREMRANGEBYSCORE', KEYS[16], '-inf', now - win)
  redis.call('ZADD', KEYS[16], now, ARGV[33])
  -- Capped to the newest pairIndexCap (10000): Unlock reads it in
  -- batches, and an older window not in it ends by itself.
  redis.call('ZREMRANGEBYRANK', KEYS[16], 0, -10001)
  redis.call('PEXPIRE', KEYS[16], win)
  local lockAfter = tonumber(ARGV[11])
  if lockAfter > 0 and not known(KEYS[9], home, remember) then
    local n = addWin(KEYS[3], lockWin, tonumber(ARGV[27]))
    local l = redis.call('GET', KEYS[8])
    local active = false
    if l then
      local u, comp = string.match(l, '^(%d+)|%d+|(%d)|')
      active = comp == '1' or tonumber(u) > now
    end
    if n >= lockAfter and not active then
      local d = tonumber(ARGV[12])
      local reason = n .. ' distinct wrong passwords in ' .. ARGV[31]
      redis.call('SET', KEYS[8], (now + d) .. '|' .. now .. '|0|' .. reason, 'PX', d)
      redis.call('ZADD', KEYS[14], now + d, login)
      redis.call('ZREMRANGEBYSCORE', KEYS[14], '-inf', now)
      redis.call('DEL', KEYS[3])
      table.insert(ev, {'L', login, now + d, d, n, 0, reason .. ' from untrusted sources', 0, ''})
    end
  end
end
if outcome == 'e' and exempt then return ev end
if banBlocks(KEYS[10], exempt) then return ev end
for i = 1, nn do
  if banBlocks(KEYS[NB + 4 * (i - 1) + 3], exempt) then return ev end
end
local function ban(bk, ok, fk, prefix, failures, reason)
  local cur = redis.call('GET', bk)
  if cur then
    local u, manual = string.match(cur, '^(%d+)|%d+|(%d)|')
    if manual == '1' and tonumber(u) > now then return end
  end
  local count, last = 0, 0
  local o = redis.call('GET', ok)
  if o then
    local c, l = string.match(o, '^(%d+)|(%d+)$')
    count, last = tonumber(c), tonumber(l)
  end
  local forget = tonumber(ARGV[18])
  if count > 0 and now - last > forget then count = 0 end
  local d = math.floor(tonumber(ARGV[15]) * tonumber(ARGV[16]) ^ count)
  local maxd = tonumber(ARGV[17])
  if d > maxd or d <= 0 then d = maxd end
  count = count + 1
  if forget > 0 then
    redis.call('SET', ok, count .. '|' .. now, 'PX', forget + d)
  end
  local v = (now + d) .. '|' .. now .. '|0|' .. count .. '|' .. reason
  redis.call('SET', bk, v, 'PX', d)
  redis.call('ZREMRANGEBYSCORE', KEYS[13], '-inf', now)
  redis.call('ZADD', KEYS[13], now + d, prefix)
  redis.call('XADD', KEYS[15], 'MAXLEN', '~', feedLen, '*', 'op', 'ban', 'p', prefix, 'v', v)
  if fk then redis.call('DEL', fk) end
  table.insert(ev, {'B', prefix, now + d, d, failures, count, reason, 0, ''})
end
local n = addWin(KEYS[1], win, tonumber(ARGV[25]))
local ipAfter, exMax = tonumber(ARGV[13]), tonumber(ARGV[20])
local ceiling = exempt and exMax > 0 and n >= exMax
if ipAfter > 0 and n >= ipAfter and (not exempt or ceiling) then
  local reason = n .. ' distinct failures in ' .. ARGV[30]
  if ceiling then
    reason = reason .. ' (exemption ceiling)'
    redis.call('DEL', KEYS[7])
  end
  ban(KEYS[10], KEYS[11], KEYS[1], ARGV[33], n, reason)
end
local netAfter = tonumber(ARGV[14])
if exempt or netAfter == 0 then return ev end
for i = 1, nn do
  local base = NB + 4 * (i - 1)
  local m = addWin(KEYS[base + 1], win, tonumber(ARGV[26]))
  if m >= netAfter then
    ban(KEYS[base + 3], KEYS[base + 4], KEYS[base + 1], ARGV[35 + i], m,
      m .. ' distinct failures from the network in ' .. ARGV[30])
  end
end
return ev
`)

// addBanScript stores a ban made outside an attempt (an admin ban, or
// one a node hands over after it lost the store) and announces it.
// KEYS: ban, index, feed, lift mark. ARGV: value, until ms, prefix, now,
// feed length, "nx" to keep a ban the store already has and to skip a
// ban lifted after it was made, created ms.
var addBanScript = redis.NewScript(`
local ends, now = tonumber(ARGV[2]), tonumber(ARGV[4])
if ends <= now then return 0 end
local r
if ARGV[6] == 'nx' then
  local lifted = redis.call('GET', KEYS[4])
  if lifted and tonumber(lifted) >= tonumber(ARGV[7]) then return 0 end
  r = redis.call('SET', KEYS[1], ARGV[1], 'PX', ends - now, 'NX')
else
  r = redis.call('SET', KEYS[1], ARGV[1], 'PX', ends - now)
end
if not r then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], ends, ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'op', 'ban', 'p', ARGV[3], 'v', ARGV[1])
return 1
`)

// removeBanScript lifts a ban, forgets its escalation and its failure
// window, marks the lift (so a node that missed it does not hand the ban
// back), and announces it (also when the store had no ban, so a node's
// own copy goes too). KEYS: ban, offences, failures, index, feed, lift
// mark. ARGV: prefix, feed length, now, how long the mark stays.
var removeBanScript = redis.NewScript(`
local had = redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[6], ARGV[3], 'PX', ARGV[4])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[2], '*', 'op', 'lift', 'p', ARGV[1])
return had
`)

// unlockScript lifts a lockout and forgets the login's failures and
// countries; the (login, address) windows are deleted after it, in
// batches (Store.Unlock). KEYS: lockout, failures, countries, lockout
// index. ARGV: login, now.
var unlockScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
local active = 0
if v then
  local u, comp = string.match(v, '^(%d+)|%d+|(%d)|')
  if comp == '1' or tonumber(u) > tonumber(ARGV[2]) then active = 1 end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
return active
`)
