-- wrk: each connection waits 20 ms after each response before its next request (the Python load generator's
-- pause_s=0.02), so that 50 connections make light load and the p99 is the router's, not a queue.
function delay()
   return 20
end
