"""What the service keeps: run records, trajectories, studies' keys and workers' heartbeats in
Redis, and uploaded blobs on a shared directory.

    keys          the Redis key layout, every key of every store spelled in one place
    codec         how each record field is stored in the record's hash (a new field: one line)
    records       RecordStore and JobStore, what callers use: create, read, list, cancel
    trajectories  TrajectoryStore, the same lifecycle for trajectory records
    lifecycle     claim, fenced writes, hand-back and end of a run, atomic in Redis
    indexes       the per-status and label indexes, their backfill, the ops view's rows
    paging        newest-first listing through the smallest index of a filter
    retention     how long ended records are kept; which are due to be pruned
    metrics       ended-run counters and histograms, written by each end
    idempotency   Idempotency-Key records (runs and studies) and the one-message enqueue claim
    lock          the per-record run lock
    broker        kombu's messages of a record (restore, ids waiting)
    heartbeats    workers' heartbeats
    connection    Redis clients that wait out a restart or give up fast
    blobs         the content-addressed blob store
    local_redis   a private redis-server for `make run` and the tests
"""
