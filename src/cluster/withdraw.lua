-- Take this user out of the queue. ARGV: uid. Returns 1 if it was queued, 0 if it was not
-- (another node claimed it first: a `paired` for it is on its way).
if drop_entry(ARGV[1]) then return 1 end
return 0
