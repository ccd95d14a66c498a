"""Every default, named once, with the reason for its value."""

from __future__ import annotations

# The coordinator's client/worker endpoint when nothing else is said (DESIGN.md, "Public surface").
COORDINATOR_URL = "tcp://127.0.0.1:7700"
# Raft port of the embedded one-node default: the client port + 1, so one number is enough to remember.
RAFT_ADDRESS = "127.0.0.1:7701"
DATA_DIR = "./qrt-data"
ENV_COORDINATORS = "QRT_COORDINATORS"

# A handler that runs longer is reported as timed out: Celery has no default limit, and a hung task
# then holds a slot forever; one minute covers ordinary work and surfaces the stuck ones.
TASK_TIMEOUT = 60.0
# Retries after a failure: 3 (4 attempts), the common default (Dramatiq 20 is long; Celery 3).
RETRIES = 3
# Exponential backoff: 1 s, 2 s, 4 s, ... capped at 5 minutes, with up to +50 % jitter.
BACKOFF_BASE = 1.0
BACKOFF_FACTOR = 2.0
BACKOFF_CAP = 300.0
BACKOFF_JITTER = 0.5
# A task whose worker is lost runs again without using a retry, this many times; one more loss and it
# is a poison task (it probably kills its worker) and goes to the DLQ as `worker_lost`.
MAX_WORKER_LOSSES = 3
# Results stay this long, so a client that waits a little late still gets them; bounded memory.
RESULT_TTL = 600.0
# The dead-letter queue keeps a failure for a week or the newest 100,000, whichever is smaller.
DLQ_MAX_AGE = 7 * 24 * 3600.0
DLQ_MAX_ENTRIES = 100_000

# Workers heartbeat every second; a lease expires after 6 s of silence (6 missed beats: a GC pause or
# a busy loop does not lose a task, a dead worker is noticed in seconds).
HEARTBEAT_INTERVAL = 1.0
LEASE_TIMEOUT = 6.0
# A worker whose heartbeats no leader has answered for this long stops its handlers (fences
# itself) before its leases can expire and be granted elsewhere, even by a leader elected while a
# stale one still answered it: docs/reliability.md has the inequality these constants keep, and
# tests/unit/test_reliability.py checks it.
WORKER_FENCE_AFTER = 3.5
# How often the leader has every replica digest its state and compare it with its own (checkpoints.py).
CHECKPOINT_INTERVAL = 10.0
# An idle leader commits a tick this often, so that every follower knows leader time to within it
# even when it caught up with a log the leader wrote long ago (Proposer._follow).
LEADER_TIME_EVERY = 1.0
# A worker or client that hears nothing from its coordinator this long tries the next address.
SILENCE_BEFORE_FAILOVER = 1.5
# After `no_leader` or `unavailable`, a client sends the request again this much later: an election
# takes 0.4-2.5 s (measured), so a few quick retries find the new leader soon after it is elected.
NO_LEADER_RETRY = 0.2
# A worker whose hello met `no_leader` says hello again this much later. Only then: a hello repeated
# while its welcome is on the way would make the leader recount slots that a `run` already took.
HELLO_RETRY = 0.5
# A worker's outcomes not acknowledged this long are sent again (the leader may have died before
# committing them): an ack normally comes within a commit, milliseconds (docs/protocol.md, §8).
RESEND_AFTER = 1.0
# A worker that reads acks in `run` (its hello's `acks_in_run`) has its outcomes' ack held up to this
# long for the next `run` to it to carry, instead of a frame of its own: with one slot, that `run`
# leaves when its next `done` arrives, about one commit later. Far below RESEND_AFTER.
ACK_HOLD = 0.02
# How long a client request may go without any leader answering before it fails with NoLeader
# (`Client(timeout=...)`): several elections' worth, and every address tried several times.
REQUEST_TIMEOUT = 15.0
# Longest a single `wait` is held by the coordinator; result() repeats waits up to its timeout. Short,
# because a wait held by a leader that dies is noticed only this long (plus the silence) later.
WAIT_CHUNK = 5.0
# Slots per worker process: enough to keep async I/O handlers busy, small enough to spread load.
WORKER_CONCURRENCY = 8
# On SIGTERM a worker finishes what it runs for this long, then gives the rest back to the queue.
DRAIN_TIMEOUT = 60.0

# Deepest nesting of arrays and maps in a task's arguments or result (JSON-like data is a few levels
# deep): msgpack's own limit is 1,024, and a value near it passed the edge, then could not be packed
# inside the command that carries it (measured: its whole Raft batch was dropped, again and again).
MAX_NESTING = 64
# What one request may create (docs/protocol.md, "Limits"): a submit's tasks (the client splits
# larger batches), a hello's actors, a task's key names.
MAX_TASKS_PER_SUBMIT = 10_000
MAX_ACTORS_PER_HELLO = 1_000
MAX_KEYS_PER_TASK = 16

# Largest frame accepted: big enough for any sane payload, small enough that one client cannot
# exhaust the coordinator's memory.
MAX_FRAME_BYTES = 16 * 1024 * 1024
# Largest frame on the client/worker port at all, both ways (ZeroMQ's MAXMSGSIZE: it drops a peer that
# sends more). What the coordinator sends may be larger than what it accepts (a `run` of one task whose
# arguments fill a frame, a dead letter with its arguments and traceback), so clients and workers accept
# up to this; so does a worker from its process-isolated children (an outcome holds one result).
PEER_FRAME_RATIO = 4
MAX_PEER_FRAME_BYTES = PEER_FRAME_RATIO * MAX_FRAME_BYTES
# What one connection's requests may hold in the leader at once: submits and changes not yet
# committed, waits not yet answered, counted by frame size (a request costs at least
# REQUEST_FLOOR_BYTES, so a flood of tiny waits is bounded too). Past it, `unavailable`: resend once
# some are answered (clients do, after a pause). Four full frames in flight is room enough for any
# client that reads its answers.
HELD_FRAMES_PER_PEER = 4  # times the node's frame limit (MAX_FRAME_BYTES by default: 64 MiB)
REQUEST_FLOOR_BYTES = 512

# Raft (pysyncobj). Its default batching waits for a timer: ~10 commits/s (measured, DESIGN.md).
RAFT_APPEND_ENTRIES_USE_BATCH = False
# A leader cut off from its peers steps down after this; the default 30 s lets it believe it leads.
RAFT_LEADER_FALLBACK_TIMEOUT = 1.0
# A follower that hears no leader for a random time between these campaigns (pysyncobj's defaults,
# named here because the fence's inequality depends on the minimum).
RAFT_MIN_TIMEOUT = 0.4
RAFT_MAX_TIMEOUT = 1.4
# Group commit: at most this many client commands go into one Raft entry.
MAX_COMMANDS_PER_ENTRY = 2000
# Entries proposed and not yet committed, at most: what gathers meanwhile goes into the next entry,
# proposed when this one commits. Each entry costs the leader a round of messages (encrypt, send,
# read two answers, apply) however little it holds; with one in flight, 2 workers x 1 slot on 3
# nodes ran 1,440 -> 1,740 tasks/s, 8 slots 5,290 -> 5,760, and a round trip's p50 2.4 -> 2.1 ms
# (bench.compare, interleaved). No grant's run waits for it; a limited actor's dispatch may wait one
# commit more (W6 and bench.flow_control unchanged).
ENTRIES_IN_FLIGHT = 1
# ... unless the oldest has waited this long: a commit that pysyncobj is slow to answer (a snapshot,
# a follower catching up) must not hold everything gathered behind it.
ENTRY_HOLD_LIMIT = 0.2

# Per-key metric series: the key values with the most tasks submitted, each a series; the rest are
# summed under key="other" (`qrt coordinator --metrics-top-keys`).
METRICS_TOP_KEYS = 20
