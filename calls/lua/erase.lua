--[[
Erase a slot member's recording from the registry: its state becomes "erased" for good,
its audio metadata goes, it leaves the queue, and its SIDs join the business's
tombstones, so that no later webhook, play, backfill or redelivered stream entry fetches
it again. Idempotent: erasing twice changes nothing more.

KEYS[1] rec_call:{b}:<member>  HASH   the member's state (a call's, for its primary)
KEYS[2] rec_status:{b}         STREAM status changes for SSE
KEYS[3] rec_erased:{b}         SET    tombstones: erased members and recording SIDs
KEYS[4] rec_queue:{b}          LIST   the business's queue
KEYS[5] rec_queued:{b}         SET    its dedup mirror
KEYS[6] rec_queued_at:{b}      HASH   enqueue times
KEYS[7] rec_pending:{b}        SET    members in queued/processing (set_state)
KEYS[8..] rec_call:{b}:<recording_sid> of each ARGV[4..]: the recordings' own records
ARGV[1] member sid (the call SID for a call's primary recording, else the recording SID)
ARGV[2] status stream MAXLEN (approximate)
ARGV[3] erased at, ms
ARGV[4..] recording SIDs of the member (Twilio's copies to delete)

Runs behind the shared set_state (prelude).

Returns cjson {already = true|false}: true when the member was erased before.
]]
local member_key, status, erased = KEYS[1], KEYS[2], KEYS[3]
local queue, queued, queued_at = KEYS[4], KEYS[5], KEYS[6]
local st = { status = status, pending = KEYS[7], maxlen = ARGV[2] }
local member, now = ARGV[1], ARGV[3]

local already = redis.call('SISMEMBER', erased, member) == 1
redis.call('SADD', erased, member)
for i = 4, #ARGV do redis.call('SADD', erased, ARGV[i]) end

if redis.call('SISMEMBER', queued, member) == 1 then
  redis.call('LREM', queue, 0, member)
  redis.call('SREM', queued, member)
  redis.call('HDEL', queued_at, member)
end
-- The audio's metadata goes; the call itself (who called whom, when) stays.
local function forget(key)
  redis.call('HDEL', key, 'rec_duration', 'attempts', 'reason', 'channels', 'source',
    'rec_start_ms', 'error_code', 'twilio_copy')
end
forget(member_key)
for i = 8, #KEYS do forget(KEYS[i]) end
redis.call('HSET', member_key, 'erased_ms', now)
set_state(st, member_key, member, 'erased', nil, nil)
return cjson.encode({ already = already })
