-- The reference's production traffic mix (reference-proxy.md §4.3, the usage
-- counts of proxy/perf_test.py): Powerwall-Dashboard/telegraf plus the web app.
-- The five heaviest routes are polled ~8,000 times per 8 h each, the next nine
-- ~3,900 times each. §4.3 gives no counts for its other 13 routes (they are the
-- light ones), so they are left out. Each request picks a path at random with
-- these weights; requests are pre-formatted once per thread.

local weighted = {
  {"/api/meters/aggregates", 8000},
  {"/api/system_status/soe", 8000},
  {"/api/system_status/grid_status", 8000},
  {"/api/powerwalls", 8000},
  {"/api/sitemaster", 8000},
  {"/freq", 3900},
  {"/vitals", 3900},
  {"/strings", 3900},
  {"/alerts/pw", 3900},
  {"/fans/pw", 3900},
  {"/soe", 3900},
  {"/temps/pw", 3900},
  {"/pod", 3900},
  {"/aggregates", 3900},
}

local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

local reqs = {}

function init(args)
  -- Weights are multiples of 100: one list entry per 100 uses (751 entries).
  for _, pw in ipairs(weighted) do
    local req = wrk.format("GET", pw[1])
    for _ = 1, pw[2] / 100 do
      table.insert(reqs, req)
    end
  end
  math.randomseed(1000 + (id or 0))
end

function request()
  return reqs[math.random(#reqs)]
end

-- done() (the JSON line bench/run.py reads) is shared with the single-path runs.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
