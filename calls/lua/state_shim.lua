--[[
Until the slot scripts' shared prelude (semaphore/lua/prelude.lua) lands: the same
set_state, so the registry scripts below are written against its signature.
]]
local function set_state(st, call_key, sid, state, position, reason)
  local previous = redis.call('HGET', call_key, 'state')
  redis.call('HSET', call_key, 'state', state)
  if reason then redis.call('HSET', call_key, 'reason', reason) end
  if state == 'queued' or state == 'processing' then
    redis.call('SADD', st.pending, sid)
  else
    redis.call('SREM', st.pending, sid)
  end
  if previous ~= state or position then
    redis.call('XADD', st.status, 'MAXLEN', '~', st.maxlen, '*',
      'sid', sid, 'status', state, 'position', tostring(position or ''))
  end
end
