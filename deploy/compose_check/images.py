"""Images without an image registry: a Debian base made by debootstrap, the project's image on it
(Dockerfile, BASE_IMAGE build arg) and Redis/PostgreSQL/RabbitMQ/HAProxy from Debian's packages.

Every image is tagged with a content key (what went into it), so a second run finds it and
skips the build; `--clean` removes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from deploy.compose_check import engine
from deploy.compose_check.log import CheckFailed, say

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
# python3-venv: the image's Python lives in a venv (/opt/venv), as pip may not write to
# Debian's own Python (PEP 668); passwd: the Dockerfile's useradd.
INCLUDE = "python3,python3-venv,ca-certificates,passwd"
VENV = "/opt/venv"
PATH = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO = "delivery-check"  # every image this tool makes is delivery-check/...:KEY
SERVICES = ("redis", "postgres", "rabbitmq", "haproxy")
# The host's extra certificate authorities (a TLS-inspecting egress proxy, a company CA): the
# base trusts them too, or pip and apt inside the builds could not reach PyPI.
HOST_CAS = Path("/usr/local/share/ca-certificates")
RECIPE = 1  # bump when the steps below change


def debian_mirror() -> str:
    """The Debian mirror apt already uses (sources.list or deb822 .sources files)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        for m in re.finditer(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            if m.group(2) == SUITE and "security" not in m.group(1):
                return m.group(1)
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split() \
                    and "security" not in uris.group(1):
                return uris.group(1)
    return "http://deb.debian.org/debian"


def _host_cas() -> list[Path]:
    return sorted(HOST_CAS.glob("**/*.crt")) if HOST_CAS.is_dir() else []


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def exists(tag: str) -> bool:
    return engine.docker("image", "inspect", tag, check=False).returncode == 0


def _image_id(tag: str) -> str:
    res = engine.docker("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    return res.stdout.strip() if res.returncode == 0 else ""


def _drop_superseded(repo: str, keep: str) -> None:
    """Older tags of one of our repositories (a changed recipe or lock): not left to pile up."""
    res = engine.docker("images", repo, "--format", "{{.Repository}}:{{.Tag}}", check=False)
    old = [t for t in res.stdout.split() if t != keep and t.startswith(f"{REPO}/")]
    if old:
        engine.docker("rmi", *old, check=False)


def _run(cmd: list[str], what: str, timeout: float = 1800) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise CheckFailed(f"{what} failed (exit {res.returncode}): {' / '.join(tail)}")


def base_image() -> tuple[str, bool]:
    """The debootstrapped base, built when its key is new. Returns (tag, built now)."""
    mirror = debian_mirror()
    cas = [(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in _host_cas()]
    tag = f"{REPO}/base:{_key(RECIPE, SUITE, INCLUDE, mirror, cas)}"
    if exists(tag):
        say(f"base image {tag}: cached")
        return tag, False
    if shutil.which("debootstrap") is None:
        if os.geteuid() != 0:
            raise CheckFailed("debootstrap is missing and installing it needs root")
        say("installing debootstrap (apt-get)")
        _run(["apt-get", "install", "-y", "-q", "debootstrap"], "apt-get install debootstrap")
    with tempfile.TemporaryDirectory(prefix="compose-check-rootfs-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        say(f"debootstrap --variant=minbase {SUITE} from {mirror} (about a minute)")
        _run(["nice", "-n", "10", "debootstrap", "--variant=minbase", f"--include={INCLUDE}",
              SUITE, str(root), mirror], "debootstrap")
        for ca in _host_cas():
            shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
        say(f"venv {VENV}, {len(cas)} host CA(s), apt lists and caches dropped")
        _run(["chroot", str(root), "update-ca-certificates"], "update-ca-certificates")
        _run(["chroot", str(root), "python3", "-m", "venv", VENV], "python3 -m venv")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        say(f"docker import {tag}")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(
            [engine.docker_bin(), "import",
             "--change", f"ENV PATH={PATH}",
             # pip in the venv trusts the system bundle (with the host CAs), not its own copy.
             "--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
             "--change", "ENV LANG=C.UTF-8",
             "--change", 'CMD ["python3"]', "-", tag],
            stdin=tar.stdout, capture_output=True, text=True, env=engine.env(), timeout=900)
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise CheckFailed(f"docker import failed: {imp.stderr.strip()[-300:]}")
    _drop_superseded(f"{REPO}/base", tag)
    return tag, True


def _build(tag: str, dockerfile: Path, context: Path, args: dict[str, str]) -> None:
    cmd = ["build", "-q", "-t", tag, "-f", str(dockerfile)]
    for k, v in args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    engine.docker(*cmd, str(context), timeout=3600)


def service_images(base: str) -> dict[str, tuple[str, bool]]:
    """Redis, PostgreSQL, RabbitMQ and HAProxy from Debian's packages, on the base."""
    out = {}
    for name in SERVICES:
        files = sorted(p for p in (HERE / "images").glob(f"{name}*") if p.is_file())
        tag = f"{REPO}/{name}:{_key(base, [(p.name, p.read_bytes().hex()) for p in files])}"
        if exists(tag):
            say(f"{name} image {tag}: cached")
            out[name] = (tag, False)
            continue
        say(f"building {name} image {tag} (Debian packages)")
        _build(tag, HERE / "images" / f"{name}.Dockerfile", HERE / "images", {"BASE": base})
        _drop_superseded(f"{REPO}/{name}", tag)
        out[name] = (tag, True)
    return out


def app_image(base: str) -> str:
    """The project's Dockerfile on the base. Docker's layer cache keeps the dependency layer
    (requirements.lock) across runs; only the source layers are rebuilt when the code changed."""
    tag = f"{REPO}/app:{base.rpartition(':')[2]}"
    say(f"building the project's image {tag} (Dockerfile, BASE_IMAGE={base})")
    before = _image_id(tag)
    _build(tag, engine.ROOT / "Dockerfile", engine.ROOT, {"BASE_IMAGE": base})
    if before and before != _image_id(tag):
        engine.docker("rmi", before, check=False)  # the previous build, now untagged
    _drop_superseded(f"{REPO}/app", tag)
    return tag


def remove_all() -> list[str]:
    """Every image this tool made (--clean)."""
    res = engine.docker("images", "--format", "{{.Repository}}:{{.Tag}}", check=False)
    ours = [t for t in res.stdout.split() if t.startswith(f"{REPO}/")]
    if ours:
        engine.docker("rmi", "-f", *ours, check=False)
    return ours
