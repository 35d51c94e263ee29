"""The dev kit: child processes and free ports (procs), the local process cluster (cluster),
scratch services and faults (services: a private redis-server or PostgreSQL, a fresh database,
Redis key space or RabbitMQ vhost, a database outage). Shared by the demo, the tests and the
benchmarks; the demo is the only runtime module that imports it (tests/test_architecture.py)."""
