"""Finding the process of ours that has a transaction open, on the real PostgreSQL."""

from __future__ import annotations

import os

import psycopg

from bench.soak.inflight import busy_client_ports, owner_of_port
from workers.devkit.services import PG_ADMIN_URL


def test_a_transaction_holding_an_advisory_lock_is_traced_to_its_process(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:  # not autocommit: the transaction stays open
        conn.execute("SELECT pg_advisory_xact_lock(4242)")
        ports = busy_client_ports(PG_ADMIN_URL, pg_url)
        assert ports and ports[0][1] is True
        assert owner_of_port(ports[0][0], [os.getpid()]) == os.getpid()
        assert owner_of_port(ports[0][0], [1]) is None
    assert busy_client_ports(PG_ADMIN_URL, pg_url) == []
