if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'uploader', ARGV[1], 'size', ARGV[2], 'stored_at', ARGV[3])
return 1
