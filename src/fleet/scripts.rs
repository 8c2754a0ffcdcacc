//! The Lua scripts the tier runs in Redis: each reads and writes an image's keys (one cluster
//! slot, by the `{id}` hash tag) in one step, so no other instance can act in between.

/// Writes the value (and the grant) only if the generation is still the one seen before the
/// fetch. KEYS: image, gen[, grant]; ARGV: value, expected gen, PX ms, grant record.
pub(super) const PUBLISH_SCRIPT: &str = r"
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[3]) end
return 1";

/// Deletes the values (of every mode and protocol) and bumps the generation. KEYS: gen, the
/// image's values (ARGV[2] of them); ARGV: generation life ms, number of values.
pub(super) const INVALIDATE_SCRIPT: &str = r"
for i = 2, tonumber(ARGV[2]) + 1 do redis.call('DEL', KEYS[i]) end
local gen = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return gen";

/// A 404 that proves nothing by itself: invalidates the image as above only if there is a
/// shared value to end, and (with a grant, per-credential) only if the grant held, so the
/// credential could read that value and the image itself is gone. The grant is deleted
/// either way. Nothing is written for IDs that were never shared (a flood of made-up IDs
/// must not fill Redis). Returns 1 when it invalidated.
/// KEYS: gen, the image's values (ARGV[2] of them: every mode and protocol)[, grant];
/// ARGV: generation life ms, number of values.
pub(super) const NOT_FOUND_SCRIPT: &str = r"
local values = tonumber(ARGV[2])
local grant_key = KEYS[values + 2]
if grant_key then
  local grant = redis.call('GET', grant_key)
  if not grant then return 0 end
  redis.call('DEL', grant_key)
  if string.match(grant, '^[^:]*') ~= (redis.call('GET', KEYS[1]) or '0') then return 0 end
end
local image_keys = {}
for i = 2, values + 1 do image_keys[#image_keys + 1] = KEYS[i] end
if redis.call('EXISTS', unpack(image_keys)) == 0 then return 0 end
redis.call('DEL', unpack(image_keys))
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1";

/// Takes the lease unless a recent fetch was not shared. Returns 1 (taken), 0 (held by
/// another) or -1 (fetch alone). KEYS: lease, pass; ARGV: token, PX ms.
pub(super) const LEASE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0";

/// Extends a lease that is still the caller's. KEYS: lease; ARGV: token, PX ms.
pub(super) const RENEW_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0";

/// Moves the purge time forward, never back (hosts' clocks differ). KEYS: purged-at; ARGV: ms.
pub(super) const PURGE_SCRIPT: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1";

/// Deletes a lease only if it is still the caller's, and when its fetch was not shared
/// (pass ms > 0) lets the waiters fetch on their own. KEYS: lease, pass; ARGV: token, pass ms.
pub(super) const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= '0' then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
return 1";
