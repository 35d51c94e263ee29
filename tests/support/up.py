"""``delivery up`` as a developer runs it: a subprocess on its own SQLite directory, with what
it printed (the demo page, the send endpoint, each demo user's sign-in link) parsed."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from workers.devkit.procs import Proc, delivery_cmd


@dataclass
class Up:
    proc: Proc
    page: str  # http://127.0.0.1:PORT/
    api: str | None  # the send endpoint's base URL, None with --no-dev-api
    links: dict[str, str]  # user -> sign-in link

    def token(self, user: str) -> str:
        return parse_qs(urlsplit(self.links[user]).query)["token"][0]


@contextlib.contextmanager
def delivery_up(data_dir: Path, *args: str) -> Iterator[Up]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    env["DELIVERY_DATA_DIR"] = str(data_dir)
    proc = delivery_cmd("delivery-up", ["up", "--port", "0", *args], env)
    try:
        proc.wait_for_log("Ctrl-C stops", timeout=90)
        log = proc.log()
        page = re.search(r"demo page\s+(\S+)", log)
        api = re.search(r"page send\s+(http\S+)/v1/messages", log)
        links = dict(re.findall(r"^\s+(\w+)\s+(http://\S+\?token=\S+)$", log, re.M))
        assert page is not None and links, log
        yield Up(proc, page.group(1), api.group(1) if api else None, links)
    finally:
        proc.stop()
