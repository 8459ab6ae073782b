--[[
release: a request is over; return its permit, adjust the account's limit (AIMD) from
its outcome, and hand the free permits out.

KEYS[1..3], common ARGV: see permits_prelude.lua.
KEYS[4]  tw_permit:{tw:A}:<id>   id's lease
ARGV[7]  id           the permit
ARGV[8]  outcome      "ok" (Twilio answered, not 429), "throttled" (429), "error" (no
                      answer: says nothing about the limit)
ARGV[9]  concurrent   Twilio-Concurrent-Requests of the answer, "" when absent
ARGV[10] cooldown_ms  a 429 within this long of the last decrease does not decrease
                      again (requests already in flight were sent under the old limit)

AIMD: a 429 halves the limit (at least 1), and when Twilio said how many requests it
counted, never leaves it above that count minus one; every `limit` successes in a row
add one, up to max_limit, unless Twilio's count shows the account already at the limit.

Returns JSON {released: bool, in_use, limit, others: [ids granted during this call]}.
]]

local id, outcome, cooldown_ms = ARGV[7], ARGV[8], tonumber(ARGV[10])
local concurrent = tonumber(ARGV[9])
-- Frees: its own permit, and one more if AIMD raises the limit.
check_derived({KEYS[4]}, 2, {})
local released = redis.call('SREM', permits, id) == 1
redis.call('DEL', KEYS[4])
local lim = limit()
if outcome == 'throttled' then
  redis.call('HINCRBY', rate, 'throttled', 1)
  local cut_ms = tonumber(redis.call('HGET', rate, 'cut_ms')) or 0
  if now_ms - cut_ms >= cooldown_ms then
    local new = math.max(1, math.floor(lim / 2))
    if concurrent and concurrent > 1 then new = math.max(1, math.min(new, concurrent - 1)) end
    redis.call('HSET', rate, 'limit', new, 'ok', 0, 'cut_ms', now_ms)
  end
elseif outcome == 'ok' and lim < max_limit then
  local ok = redis.call('HINCRBY', rate, 'ok', 1)
  if ok >= lim and not (concurrent and concurrent >= lim) then
    redis.call('HSET', rate, 'limit', lim + 1, 'ok', 0)
  end
end
local granted, in_use = fill(prune())
return cjson.encode({released = released, in_use = in_use, limit = limit(), others = granted})
