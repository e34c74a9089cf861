-- wrk script of `just bench-serve`: one route per run (BENCH_ROUTE = tx | merchants), requests
-- paced per connection (BENCH_DELAY_MS between a response and the next request) so that the
-- connections together offer a steady rate; tx_ids drawn at random from BENCH_IDS.
local route = os.getenv("BENCH_ROUTE") or "tx"
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "10")
local ids = {}

function init(args)
  for line in io.lines(os.getenv("BENCH_IDS")) do
    ids[#ids + 1] = line
  end
  math.randomseed(os.time())
end

function delay()
  return pause
end

local function day(days_ago)
  return os.date("!%Y-%m-%d", os.time() - days_ago * 86400)
end

function request()
  if route == "tx" then
    return wrk.format("GET", "/transactions/" .. ids[math.random(#ids)])
  end
  -- A week somewhere in the last 30 days, and a limit from 1 to 20.
  local start = math.random(7, 30)
  return wrk.format("GET", "/merchants/top?start_date=" .. day(start) .. "&end_date=" .. day(start - 6)
    .. "&limit=" .. math.random(1, 20))
end
