--[[
page: one page of a business's calls, newest first, after a cursor (started_at, sid).

The listing index is scored by started_at (ms, but Twilio's timestamps have one-second
resolution, so ties are common); Redis orders ties by member, so newest first is
(score desc, sid desc): a total order, and (score, sid) a unique cursor. The page starts
right after the cursor's place in that order, whether or not the cursor's call is still
at that score. Read-only; one script so that the rank and the range see the same index.

KEYS[1] rec_calls:{b}   ZSET  sid -> started_at ms
ARGV[1] count           rows to return (the caller asks one more than its page to know
                        whether another page follows)
ARGV[2] cursor score    "" for the first page
ARGV[3] cursor sid

Returns a flat array sid1, score1, sid2, score2, ... (ZREVRANGE WITHSCORES's shape).
]]
local index, count = KEYS[1], tonumber(ARGV[1])
local start = 0

-- Bytewise, as Redis orders members (Lua's < follows the server's collation locale).
local function at_least(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a >= #b
end

if ARGV[2] ~= '' then
  local score, sid = ARGV[2], ARGV[3]
  -- Newer calls come first; then the run of calls at the cursor's score, members in
  -- descending order: skip those that sort at or above the cursor's sid (binary search).
  local newer = redis.call('ZCOUNT', index, '(' .. score, '+inf')
  local lo, hi = 0, redis.call('ZCOUNT', index, score, score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local member = redis.call('ZREVRANGE', index, newer + mid, newer + mid)[1]
    if at_least(member, sid) then lo = mid + 1 else hi = mid end
  end
  start = newer + lo
end
return redis.call('ZREVRANGE', index, start, start + count - 1, 'WITHSCORES')
