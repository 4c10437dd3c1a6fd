"""Real SIP peers for end-to-end tests: sipp, sipsak and baresip.

Everything here talks over real sockets on 127.0.0.1, picks ephemeral ports,
waits on events (a bound socket, a log line, a SIP response, a ctrl_tcp
event) with a deadline, and never sleeps a fixed time.  Only the standard
library and pytest are used.

Quick reference (see docs/testing-peers.md for the why)::

    require_tool("sipp")                          -> path, or skip / fail under CI=true
    run_sipp(scenario, "127.0.0.1:5060", ...)     -> SippResult (foreground, bounded)
    sipp_register / sipp_bad_register / sipp_message / sipp_call / sipp_cancel
    bob = SippUAS("uas_answer", service="bob")          # fake callee (UDP)
    bob.register("127.0.0.1:5060", password="pw")        # from the port it will use
    with bob: ...; bob.wait().check()
    with TlsRelay.to_tls_server(("127.0.0.1", 5061), ca_file) as relay: ...
    run_sipsak(["-s", "sip:alice@127.0.0.1:5060"])
    with Baresip("sip:alice@example.test", password="pw",
                 outbound="sip:127.0.0.1:5061;transport=tls", ca_file=ca) as alice:
        alice.wait_registered()
"""

from __future__ import annotations

from .peers_baresip import (  # noqa: F401
    BARESIP_APP_MODULES,
    BARESIP_MODULES,
    Baresip,
    BaresipError,
    ReceivedMessage,
    baresip_module_dir,
)
from .peers_base import (  # noqa: F401 - the harness API, re-exported
    DOMAIN,
    HOST,
    SCENARIOS,
    SIPP_BUILTINS,
    BoundSocket,
    TlsRelay,
    bound_sockets,
    free_port,
    in_ci,
    require_tool,
    run_sipsak,
    tool_version,
    wait_until,
)
from .peers_sipp import (  # noqa: F401
    SippResult,
    SippUAS,
    default_keys,
    run_sipp,
    scenario_path,
    sipp_bad_register,
    sipp_call,
    sipp_cancel,
    sipp_message,
    sipp_register,
)
