"""sipp scenarios against presence: PUBLISH (etags, refresh, removal) and
SUBSCRIBE/NOTIFY (challenge, refresh in the dialog, expiry), over TLS."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import PASSWORDS
from .peers import run_sipp
from .server import ConclaveServer

pytestmark = pytest.mark.peers

DOMAIN = "localhost"
FAST = {
    "presence": {"min_expires": 1, "notify_merge_window": "0ms"},
    # sipp's digest knows only MD5; the server offers SHA-256 first by default.
    "auth": {"algorithms": ["MD5"]},
}


def test_sipp_publish_refresh_remove(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(config=FAST)
    result = run_sipp(
        "presence_publish",
        server.target("tls"),
        transport="l1",
        tls_ca=server.ca,
        service="bob",
        auth_pass=PASSWORDS["bob"],
        auth_uri=f"bob@{DOMAIN}",
        extra_keys={"domain": DOMAIN},
    ).check()
    assert result.received_codes() == [407, 200, 407, 200, 407, 200]


def test_sipp_subscribe_refresh_expiry(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(config=FAST)
    result = run_sipp(
        "presence_subscribe",
        server.target("tls"),
        transport="l1",
        tls_ca=server.ca,
        service="alice",
        auth_pass=PASSWORDS["alice"],
        auth_uri=f"bob@{DOMAIN}",
        extra_keys={"domain": DOMAIN, "to_user": "bob", "expires": "2"},
    ).check()
    assert result.received_requests() == ["NOTIFY", "NOTIFY", "NOTIFY"]
