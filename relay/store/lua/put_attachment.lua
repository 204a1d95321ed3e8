-- KEYS: the attachment's hash, the uploads ZSET (by upload time, for retention).
-- ARGV: uploader, size, stored_at, digest.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'uploader', ARGV[1], 'size', ARGV[2], 'stored_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
