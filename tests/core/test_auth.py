"""The authenticator: challenges, verification, stale nonces, replay, indistinguishability."""

from __future__ import annotations

import itertools

from conclave.core.auth import (
    Authenticated,
    Authenticator,
    BadCredentials,
    Challenge401,
    CredentialCache,
    UserCredentials,
)
from conclave.sip.digest import authorization_value, compute_ha1, parse_challenge
from conclave.sip.headers import Headers
from conclave.sip.message import Request
from conclave.sip.uri import parse_uri

REALM = "example.test"
PASSWORD = "Wonder-Land-123456"


def make_auth(now_counter: itertools.count[int] | None = None) -> Authenticator:
    cache = CredentialCache()
    cache.replace(
        {
            "alice": UserCredentials(
                {alg: compute_ha1("alice", REALM, PASSWORD, alg) for alg in ("MD5", "SHA-256")}
            ),
            "dora": UserCredentials(
                {alg: compute_ha1("dora", REALM, PASSWORD, alg) for alg in ("MD5", "SHA-256")},
                disabled=True,
            ),
        }
    )
    counter = itertools.count()
    return Authenticator(
        realm=REALM,
        users=cache,
        nonce_lifetime=300,
        secret=b"s" * 32,
        random_bytes=lambda n: next(counter).to_bytes(n, "big"),
    )


def register(*credentials: str) -> Request:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx")
    h.add("From", f"<sip:alice@{REALM}>;tag=1")
    h.add("To", f"<sip:alice@{REALM}>")
    h.add("Call-ID", "c1")
    h.add("CSeq", "1 REGISTER")
    for value in credentials:
        h.add("Authorization", value)
    return Request("REGISTER", parse_uri(f"sip:{REALM}"), h)


def answer(
    outcome: Challenge401, user: str, password: str, nc: int = 1, alg: str = "SHA-256"
) -> str:
    challenges = [parse_challenge(v) for _, v in outcome.headers]
    challenge = next(c for c in challenges if c.algorithm == alg)
    return authorization_value(
        challenge, username=user, password=password, method="REGISTER",
        uri=f"sip:{REALM}", cnonce="abc", nc=nc,
    )  # fmt: skip


def test_no_credentials_gets_one_challenge_per_algorithm_sha256_first() -> None:
    auth = make_auth()
    outcome = auth.authenticate(register(), proxy=False, now=1000.0)
    assert isinstance(outcome, Challenge401) and not outcome.failed
    names = [n for n, _ in outcome.headers]
    assert names == ["WWW-Authenticate", "WWW-Authenticate"]
    assert [parse_challenge(v).algorithm for _, v in outcome.headers] == ["SHA-256", "MD5"]
    proxy = auth.authenticate(register(), proxy=True, now=1000.0)
    assert isinstance(proxy, Challenge401)
    assert {n for n, _ in proxy.headers} == {"Proxy-Authenticate"}


def test_good_password_both_algorithms() -> None:
    auth = make_auth()
    for alg in ("SHA-256", "MD5"):
        challenge = auth.authenticate(register(), proxy=False, now=1000.0)
        assert isinstance(challenge, Challenge401)
        ok = auth.authenticate(
            register(answer(challenge, "alice", PASSWORD, alg=alg)), proxy=False, now=1001.0
        )
        assert ok == Authenticated("alice")


def test_wrong_password_and_unknown_user_look_the_same() -> None:
    auth = make_auth()
    challenge = auth.authenticate(register(), proxy=False, now=1000.0)
    assert isinstance(challenge, Challenge401)
    wrong = auth.authenticate(register(answer(challenge, "alice", "nope")), proxy=False, now=1001.0)
    unknown = auth.authenticate(
        register(answer(challenge, "mallory", "nope")), proxy=False, now=1001.0
    )
    disabled = auth.authenticate(
        register(answer(challenge, "dora", PASSWORD)), proxy=False, now=1001.0
    )
    for outcome in (wrong, unknown, disabled):
        assert isinstance(outcome, Challenge401) and outcome.failed

    def shape(outcome: Challenge401) -> list[tuple[str, str]]:
        # Everything but the fresh nonce is identical.
        out = []
        for name, value in outcome.headers:
            c = parse_challenge(value)
            out.append((name, f"{c.realm}|{c.algorithm}|{c.qop}|{c.opaque}|{c.stale}"))
        return out

    assert shape(wrong) == shape(unknown) == shape(disabled)  # type: ignore[arg-type]


def test_expired_nonce_gets_stale_true() -> None:
    auth = make_auth()
    challenge = auth.authenticate(register(), proxy=False, now=1000.0)
    assert isinstance(challenge, Challenge401)
    late = auth.authenticate(
        register(answer(challenge, "alice", PASSWORD)), proxy=False, now=1000.0 + 301
    )
    assert isinstance(late, Challenge401) and not late.failed
    assert all(parse_challenge(v).stale for _, v in late.headers)


def test_replayed_nonce_count_refused() -> None:
    auth = make_auth()
    challenge = auth.authenticate(register(), proxy=False, now=1000.0)
    assert isinstance(challenge, Challenge401)
    creds = answer(challenge, "alice", PASSWORD, nc=1)
    assert auth.authenticate(register(creds), proxy=False, now=1001.0) == Authenticated("alice")
    replay = auth.authenticate(register(creds), proxy=False, now=1002.0)
    assert isinstance(replay, Challenge401)
    assert all(parse_challenge(v).stale for _, v in replay.headers)
    nxt = answer(challenge, "alice", PASSWORD, nc=2)
    assert auth.authenticate(register(nxt), proxy=False, now=1003.0) == Authenticated("alice")


def test_forged_nonce_is_a_failure_not_stale() -> None:
    auth = make_auth()
    other = Authenticator(realm=REALM, users=CredentialCache(), secret=b"x" * 32)
    challenge = other.authenticate(register(), proxy=False, now=1000.0)
    assert isinstance(challenge, Challenge401)
    outcome = auth.authenticate(
        register(answer(challenge, "alice", PASSWORD)), proxy=False, now=1001.0
    )
    assert isinstance(outcome, Challenge401) and outcome.failed
    assert not any(parse_challenge(v).stale for _, v in outcome.headers)


def test_other_realm_and_other_scheme_are_ignored() -> None:
    auth = make_auth()
    outcome = auth.authenticate(
        register(
            "Basic YWxpY2U6eA==",
            'Digest username="alice", realm="elsewhere", nonce="n", uri="sip:x", response="00"',
        ),
        proxy=False,
        now=1000.0,
    )
    assert isinstance(outcome, Challenge401) and not outcome.failed


def test_malformed_credentials_are_400() -> None:
    auth = make_auth()
    outcome = auth.authenticate(register('Digest username="alice'), proxy=False, now=1000.0)
    assert isinstance(outcome, BadCredentials)


def test_clients_that_abort_on_sha256_are_offered_md5_alone() -> None:
    auth = make_auth()
    auth.md5_only_agents = ("baresip v1.",)
    req = register()
    req.headers.add("User-Agent", "baresip v1.0.0 (x86_64/linux)")
    outcome = auth.authenticate(req, proxy=False, now=1000.0)
    assert isinstance(outcome, Challenge401)
    assert [parse_challenge(v).algorithm for _, v in outcome.headers] == ["MD5"]
    other = register()
    other.headers.add("User-Agent", "Linphone/5.2")
    outcome = auth.authenticate(other, proxy=False, now=1000.0)
    assert isinstance(outcome, Challenge401)
    assert [parse_challenge(v).algorithm for _, v in outcome.headers] == ["SHA-256", "MD5"]
