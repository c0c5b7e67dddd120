"""Call logs: every call, turn, passage, latency and cost, stored and reviewable."""
