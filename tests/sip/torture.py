"""Access to the RFC 4475 / RFC 5118 torture corpus in tests/data/sip-torture."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "data" / "sip-torture"


@dataclass(frozen=True)
class TortureCase:
    suite: str
    name: str
    verdict: str  # "valid" or "invalid", as the RFC says
    description: str
    path: Path

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.name}"


def load_cases() -> list[TortureCase]:
    cases: list[TortureCase] = []
    for suite in ("rfc4475", "rfc5118"):
        folder = CORPUS / suite
        with (folder / "MANIFEST.tsv").open(newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                cases.append(
                    TortureCase(
                        suite,
                        row["name"],
                        row["verdict"],
                        row["description"],
                        folder / f"{row['name']}.dat",
                    )
                )
    if not cases:
        raise RuntimeError(f"no torture cases found under {CORPUS}")
    return cases


# How Conclave judges each message on receipt: ("ok", None), ("malformed", None)
# or ("reject", status). Derived from each message's RFC section and the
# MANIFEST description; every message in the corpus must appear here.
EXPECTED: dict[str, tuple[str, int | None]] = {
    # RFC 4475 §3.1.1: valid messages, all acceptable.
    "rfc4475/wsinv": ("ok", None),
    "rfc4475/intmeth": ("ok", None),
    "rfc4475/esc01": ("ok", None),
    "rfc4475/escnull": ("ok", None),
    "rfc4475/esc02": ("ok", None),  # unknown method: a proxy forwards, a UAS says 501
    "rfc4475/lwsdisp": ("ok", None),
    "rfc4475/longreq": ("ok", None),
    "rfc4475/dblreq": ("ok", None),
    "rfc4475/semiuri": ("ok", None),
    "rfc4475/transports": ("ok", None),
    "rfc4475/mpart01": ("ok", None),
    "rfc4475/unreason": ("ok", None),
    "rfc4475/noreason": ("ok", None),
    # §3.1.2: invalid messages.
    "rfc4475/badinv01": ("malformed", None),
    "rfc4475/clerr": ("malformed", None),
    "rfc4475/ncl": ("malformed", None),
    "rfc4475/scalar02": ("malformed", None),
    "rfc4475/scalarlg": ("malformed", None),
    "rfc4475/quotbal": ("malformed", None),
    "rfc4475/ltgtruri": ("malformed", None),
    "rfc4475/lwsruri": ("malformed", None),
    "rfc4475/lwsstart": ("malformed", None),
    "rfc4475/trws": ("malformed", None),
    "rfc4475/escruri": ("malformed", None),
    "rfc4475/baddate": ("malformed", None),
    "rfc4475/regbadct": ("malformed", None),
    "rfc4475/badaspec": ("malformed", None),
    "rfc4475/baddn": ("malformed", None),
    "rfc4475/badvers": ("reject", 505),
    "rfc4475/mismatch01": ("reject", 400),
    "rfc4475/mismatch02": ("reject", 400),
    "rfc4475/bigcode": ("malformed", None),
    # §3.2, §3.3, §3.4: transaction and application layer.
    "rfc4475/badbranch": ("ok", None),
    "rfc4475/insuf": ("reject", 400),
    "rfc4475/unkscm": ("reject", 416),
    "rfc4475/novelsc": ("reject", 416),
    "rfc4475/unksm2": ("reject", 400),
    "rfc4475/bext01": ("reject", 420),
    "rfc4475/invut": ("ok", None),  # a proxy forwards it; only a UAS would say 415
    "rfc4475/regaut01": ("ok", None),
    "rfc4475/multi01": ("malformed", None),
    "rfc4475/mcl01": ("malformed", None),
    "rfc4475/bcast": ("ok", None),
    "rfc4475/zeromf": ("reject", 483),
    "rfc4475/cparam01": ("ok", None),
    "rfc4475/cparam02": ("ok", None),
    "rfc4475/regescrt": ("ok", None),
    "rfc4475/sdp01": ("ok", None),  # a proxy forwards it; only a UAS would say 406
    "rfc4475/inv2543": ("ok", None),
    # RFC 5118.
    "rfc5118/ipv6-good": ("ok", None),
    "rfc5118/ipv6-bad": ("malformed", None),
    "rfc5118/port-ambiguous": ("ok", None),
    "rfc5118/port-unambiguous": ("ok", None),
    "rfc5118/via-received-param-with-delim": ("ok", None),
    "rfc5118/via-received-param-no-delim": ("ok", None),
    "rfc5118/ipv6-in-sdp": ("ok", None),
    "rfc5118/mult-ip-in-header": ("ok", None),
    "rfc5118/mult-ip-in-sdp": ("ok", None),
    "rfc5118/ipv4-mapped-ipv6": ("ok", None),
    "rfc5118/ipv6-bug-abnf-3-colons": ("ok", None),
    "rfc5118/ipv6-correct-abnf-2-colons": ("ok", None),
}
