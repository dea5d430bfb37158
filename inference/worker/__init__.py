"""The worker: the loop (`loop.Worker`) and its parts, each one job —

hand        what the worker holds (jobs, the line to run alone, deliveries not yet admitted) and owes Redis
admission   deliveries in, jobs out: dedupe, expiry, cancel, malformed and poison entries
answering   a job's life on the engine: start, deltas, task passes, done, cancel, taken over
policy      the step, out of memory and failed steps
usage       tokens counted and settled against the daily caps' reservations
health      Redis trouble: what /healthz says, the backoff
upkeep      heartbeat, the worker record, reclaim and reap, cancel polls
outbox      events and acks waiting for the next fenced write
"""

from inference.worker.loop import Worker

__all__ = ["Worker"]
