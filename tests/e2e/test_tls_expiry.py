"""A short-lived certificate on a running server: the expiry warning, then auto-renewal."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

from .server import ConclaveServer, conclave
from .test_tls_reload import TlsProbe, install, is_event, issue, reload_cli


def test_short_lived_certificate_is_warned_about_and_renewed(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(
        config={"tls": {"warn_before": "1h", "renew_before": "1h", "reload_poll": "200ms"}}
    )
    port = server.ports["tls"]
    live = TlsProbe(port, server.ca)  # made before the swap; must outlive it
    try:
        # Ten minutes of life: inside both windows at once, without waiting days.
        short = install(server, issue(server, lifetime=dt.timedelta(minutes=10)))
        # The poll may well notice the new files before the signal lands; either loads it.
        result = reload_cli(server)
        assert result.returncode == 0, result.stderr
        server.wait_for(is_event("certificate reloaded", fingerprint=short))
        warning = server.wait_for(is_event("certificate expiring", fingerprint=short))
        assert warning["level"] == "warning" and warning["auto_renew"] is True
        assert 0 < warning["days_left"] < 0.01
        renewed = server.wait_for(is_event("certificate renewed", old_fingerprint=short))
        assert renewed["why"] == "expiring"
        server.wait_for(
            is_event("certificate reloaded", trigger="renewal", fingerprint=renewed["fingerprint"])
        )
        fresh = TlsProbe(port, server.ca)
        assert fresh.fingerprint == renewed["fingerprint"] != short
        assert fresh.options() == 200
        fresh.close()
        assert live.options() == 200  # the connection made with the short-lived one
        not_after = dt.datetime.fromisoformat(renewed["not_after"])
        assert not_after - dt.datetime.now(dt.UTC) > dt.timedelta(days=300)
    finally:
        live.close()
    rows = json.loads(conclave("certs", "list", "--dir", str(server.data_dir), "--json").stdout)
    by_fingerprint = {row["fingerprint"]: row for row in rows}
    assert by_fingerprint[renewed["fingerprint"]]["status"] == "valid"
    assert by_fingerprint[short]["status"] == "superseded"
    check = conclave("certs", "check", "--dir", str(server.data_dir), check=False)
    assert check.returncode == 0, check.stdout + check.stderr
