"""deploy/compose-check: build the compose stack without an image registry, run it for real
(3 workers, 2 gateways behind HAProxy), send 1,000 messages through a worker stop and a gateway
scale-down, and check that nothing was lost (docs/operations.md#the-compose-stack-run-for-real).
"""
