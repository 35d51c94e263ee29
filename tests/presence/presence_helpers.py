"""Shared helpers for the presence tests (imported as a plain module)."""

from __future__ import annotations

import os
import uuid

from hypothesis import HealthCheck, settings

from presence.state import Part, Presence, Rid, State

REDIS_URL = os.environ.get("DELIVERY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

PROPS = settings(
    max_examples=int(os.environ.get("PRESENCE_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def new(name: str, inc: int = 1) -> State:
    return State((name, inc))


def keys(ps: list[Presence]) -> list[str]:
    return sorted(p.key for p in ps)


def connected(*states: State) -> list[State]:
    """Make every state know every other (like Phoenix's given_connected_cluster)."""
    for s in states:
        for o in states:
            if o is not s:
                s.see(o.replica)
    return list(states)


def extract_for(src: State, dst: State) -> list[Part]:
    return src.extract(dst.clock(), exclude=dst.replica)


def view(s: State) -> list[tuple[str, str, str]]:
    return sorted((p.key, p.conn, p.node) for p in s.list_all())


def rid(s: State) -> Rid:
    return s.replica


class Agent:
    """A presence node in a subprocess (``python -m bench.presence_agent``), with timeouts."""

    def __init__(
        self,
        prefix: str,
        name: str,
        *,
        heartbeat: float = 0.1,
        down: float = 0.6,
        purge: float = 2.0,
        url: str = REDIS_URL,
    ) -> None:
        import subprocess
        import sys

        self.name = name
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.presence_agent",
                "--url",
                url,
                "--prefix",
                prefix,
                "--name",
                name,
                "--heartbeat",
                str(heartbeat),
                "--down",
                str(down),
                "--purge",
                str(purge),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        hello = self._read(15.0)
        assert hello.get("ready"), hello
        self.incarnation = int(hello["incarnation"])

    def _read(self, timeout: float) -> dict[str, object]:
        import json
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"agent {self.name} did not answer in {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"agent {self.name} exited ({self.proc.poll()})")
        out: dict[str, object] = json.loads(line)
        return out

    def call(self, op: str, timeout: float = 10.0, **kw: object) -> object:
        import json

        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        res = self._read(timeout)
        assert res.get("ok"), res
        return res.get("result")

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(5)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("stop", timeout=3.0, graceful=True)
                self.proc.wait(3)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)
