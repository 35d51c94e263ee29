"""Device registration, its validation, ``delivery device`` and ``delivery fcm-stub``."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from firebase_admin import messaging

from delivery.push.cli import device_main
from delivery.push.devices import InvalidDevice, register_device
from delivery.push.fcm import FcmConfig, FcmSender, token_ref
from delivery.runtime import Runtime, set_runtime
from delivery.store import Store
from delivery.store.devices import devices_of
from tests.delivery.push.conftest import make_runtime
from tests.support.devices import disable
from workers.devkit.procs import Proc, delivery_cmd
from workers.devkit.services import ServiceEnv


@pytest.fixture
def rt(store: Store) -> Any:
    runtime = make_runtime(store)
    set_runtime(runtime)
    yield runtime
    set_runtime(None)


@pytest.mark.parametrize(
    ("user", "token", "platform", "field"),
    [
        ("", "t", "android", "user"),
        ("   ", "t", "android", "user"),
        ("u" * 129, "t", "android", "user"),
        (7, "t", "android", "user"),
        ("bob", "", "android", "token"),
        ("bob", "a b", "android", "token"),
        ("bob", "t" * 4097, "android", "token"),
        ("bob", None, "android", "token"),
        ("bob", "t", "symbian", "platform"),
        ("bob", "t", None, "platform"),
    ],
)
def test_validation_names_the_field(
    rt: Runtime, user: Any, token: Any, platform: Any, field: str
) -> None:
    with pytest.raises(InvalidDevice) as info:
        register_device(user, token, platform)
    assert info.value.field == field
    assert str(info.value).startswith(f"invalid {field}:")
    assert devices_of(rt.store, "bob") == []


def test_register_reactivates_and_reowns(rt: Runtime) -> None:
    d = register_device("bob", "t" * 4096, "IOS")
    assert d.platform == "ios" and d.user_id == "bob"
    assert disable(rt.store, "t" * 4096, "UNREGISTERED", d.created_at)
    assert devices_of(rt.store, "bob", include_disabled=False) == []
    d2 = register_device("carol", "t" * 4096, "android")  # the phone changed hands
    assert d2.id == d.id and d2.user_id == "carol" and d2.disabled_at is None
    assert devices_of(rt.store, "bob", include_disabled=False) == []


def test_device_cli(rt: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    assert device_main(["add", "bob", "tok-1"]) == 0
    assert device_main(["add", "bob", "tok-2", "--platform", "web"]) == 0
    assert "registered web device" in capsys.readouterr().out
    assert device_main(["add", "bob", "tok-3", "--platform", "tv"]) == 2
    assert "invalid platform" in capsys.readouterr().err
    disable(rt.store, "tok-1", "UNREGISTERED", devices_of(rt.store, "bob")[0].created_at)
    assert device_main(["list", "bob"]) == 0
    out = capsys.readouterr().out
    assert token_ref("tok-1") in out and "disabled" in out and "(UNREGISTERED)" in out
    assert device_main(["list", "bob", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["token"], r["platform"]) for r in rows] == [("tok-1", "android"), ("tok-2", "web")]
    assert device_main(["remove", "tok-2"]) == 0
    assert device_main(["remove", "tok-2"]) == 1
    assert [d.token for d in devices_of(rt.store, "bob")] == ["tok-1"]
    assert device_main(["list", "nobody"]) == 0
    assert "no devices for nobody" in capsys.readouterr().out


def test_device_command_subprocess(services: ServiceEnv, pg_store: Store) -> None:
    env = services.env()
    add = delivery_cmd("device-add", ["device", "add", "dave", "tok-9", "--platform", "ios"], env)
    assert add.popen.wait(30) == 0, add.log()
    active = devices_of(pg_store, "dave", include_disabled=False)
    assert [(d.token, d.platform) for d in active] == [("tok-9", "ios")]
    ls = delivery_cmd("device-list", ["device", "list", "dave"], env)
    assert ls.popen.wait(30) == 0
    assert token_ref("tok-9") in ls.log()


def _http(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_fcm_stub_command_and_control_api(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    proc = Proc("fcm-stub", [sys.executable, "-m", "workers.cli", "fcm-stub", "--port", "0"], env)
    try:
        proc.wait_for_log("fcm-stub listening on http://127.0.0.1:", timeout=20)
        url = proc.log().split("listening on ")[1].split()[0]
        assert _http(url + "/_health") == {"ok": True}
        _http(url + "/_control/token", {"token": "gone", "error": "UNREGISTERED"})
        # One scripted answer only: the second send's two requests run in parallel threads,
        # so a second queued answer would go to whichever request arrives first.
        _http(url + "/_control/next", {"responses": [
            {"error": "UNAVAILABLE", "retry_after": 3}]})
        sender = FcmSender(FcmConfig(project="p", url=url))
        try:
            def msg(tok: str) -> messaging.Message:
                m = messaging.Message(data={"k": "v"})
                m.token = tok
                return m

            first = sender.send([("live", msg("live"))])
            second = sender.send([("live", msg("live")), ("gone", msg("gone"))])
        finally:
            sender.close()
        assert first[0].kind == "transient" and first[0].code == "UNAVAILABLE"
        assert first[0].retry_after == 3.0
        assert sorted((r.token, r.kind, r.code) for r in second) == [
            ("gone", "invalid", "UNREGISTERED"), ("live", "ok", "ok")]
        sends = _http(url + "/_requests")
        assert [s["token"] for s in sends][:1] == ["live"] and len(sends) == 3
        assert sorted(s["answer"] for s in sends) == ["OK", "UNAVAILABLE", "UNREGISTERED"]
        _http(url + "/_control/reset", {})
        assert _http(url + "/_requests") == []
    finally:
        proc.stop()
