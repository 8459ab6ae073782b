--[[
Renew a download's slot lease while it runs, only if this worker still holds it.

KEYS[1] rec_inflight:{b}:<sid>   STRING lease, value = fencing token
ARGV[1] token                    the fencing token the worker was admitted with
ARGV[2] lease_ms                 new time to live

Returns 1 when renewed, 0 when the lease is gone or belongs to a newer admission (the
worker must stop: it lost the slot and must neither publish nor release).
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
