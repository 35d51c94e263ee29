"""The OpenAPI document against the running ``delivery api``: schemathesis generates valid and
invalid requests from docs/openapi.yaml and checks every answer (no 5xx, documented status,
headers and body schema, invalid input refused); the document's limits are the code's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from delivery.models import ID_LEN
from delivery.secret import new_secret
from delivery.settings import MAX_TTL_S
from delivery.validation import MESSAGE_NAMESPACE
from workers.devkit.cluster import LocalCluster
from workers.devkit.procs import ROOT
from workers.devkit.services import REDIS_URL, ServiceEnv

pytestmark = pytest.mark.slow

DOC = ROOT / "docs" / "openapi.yaml"
KEY = new_secret()
SCHEMA = schemathesis.openapi.from_path(DOC)


@pytest.fixture(scope="module")
def api_url(pg_url: str, run_prefix: str) -> Iterator[str]:
    env = ServiceEnv(pg_url, REDIS_URL, f"{run_prefix}:openapi").env(DELIVERY_API_KEYS=KEY)
    with LocalCluster(env) as cluster:
        url, _ = cluster.start_api()
        yield url


@SCHEMA.parametrize()
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_running_api_conforms_to_its_document(case: schemathesis.Case,
                                                  api_url: str) -> None:
    excluded = []
    if isinstance(case.body, dict) and case.body.get("conversation") is not None:
        # A generated conversation id names no conversation: refused with the documented 400
        # (field "conversation") although the request's shape is valid.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=api_url, headers={"Authorization": f"Bearer {KEY}"},
                           excluded_checks=excluded)


def test_the_document_states_the_codes_limits() -> None:
    doc = yaml.safe_load(DOC.read_text())
    schemas = doc["components"]["schemas"]
    assert schemas["Id"]["maxLength"] == ID_LEN
    assert schemas["SendRequest"]["properties"]["ttl_s"]["maximum"] == MAX_TTL_S
    assert str(MESSAGE_NAMESPACE) in schemas["Accepted"]["properties"]["id"]["description"]
    assert (ROOT / "delivery" / "httpapi" / "openapi.yaml").read_text() == DOC.read_text()
