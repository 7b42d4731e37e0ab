-- wrk: a new path on every request (/items/<n>, n counting up from a start taken from the
-- clock, so that runs seconds apart never share a path), with the -H headers kept: no two
-- requests are the same to esm's decision memo, every one is a first-seen decision.
-- `wrk -s bench/new_path.lua ...`
local n = os.time() * 1000000
request = function()
  n = n + 1
  return wrk.format("GET", "/items/" .. n)
end
