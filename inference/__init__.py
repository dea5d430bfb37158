"""Inference worker: KULLM generation behind the Redis queue."""
