"""conclave.toml: defaults, round trips, and errors that name the exact key path."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pydantic
import pytest

from conclave.config import (
    CONFIG_FILENAME,
    Config,
    ConfigError,
    dumps_config,
    load_config,
    loads_config,
    write_config,
    write_default_config,
)
from conclave.config_fields import format_duration, format_size, parse_duration, parse_size

SERVER = '[server]\ndomain = "example.test"\nhost = "sip.example.test"\n'


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads_config(text)
    return info.value.problems


def test_default_config_round_trip(tmp_path: Path) -> None:
    config = write_default_config(tmp_path, domain="Example.TEST", host="sip.example.test")
    assert load_config(tmp_path) == config
    assert config.server.domain == "example.test"
    transports = config.transports
    assert (transports.tls, transports.tcp, transports.udp, transports.ws) == (
        True,
        False,
        False,
        False,
    )
    assert (transports.tls_port, transports.sip_port, transports.bind) == (5061, 5060, "0.0.0.0")
    assert config.registrar.min_expires == 60
    assert config.registrar.default_expires == 3600
    assert config.registrar.max_expires == 86400
    assert config.registrar.max_contacts_per_aor == 10
    assert config.im.offline_max_per_user == 100
    assert config.im.offline_max_age == 7 * 86400
    assert config.auth.nonce_lifetime == 300
    assert config.auth.algorithms == ("SHA-256", "MD5")
    assert config.limits.max_message_size == 65536
    assert not config.admin.enabled and config.admin.bind == "127.0.0.1:0"
    text = (tmp_path / CONFIG_FILENAME).read_text()
    assert 'offline_max_age = "7d"' in text
    assert 'nonce_lifetime = "5m"' in text
    assert 'max_message_size = "64KiB"' in text
    assert "# plain SIP over UDP: unencrypted, off by default" in text


def test_default_config_with_transports(tmp_path: Path) -> None:
    config = write_default_config(
        tmp_path,
        domain="example.test",
        host="192.0.2.10",
        transports=["tls", "TCP", "udp"],
        tls_port=15061,
        sip_port=15060,
        bind="::",
    )
    assert config.transports.tcp and config.transports.udp and not config.transports.ws
    assert (config.transports.tls_port, config.transports.sip_port) == (15061, 15060)
    assert config.transports.bind == "::"
    assert config.server.host == "192.0.2.10"
    assert load_config(tmp_path) == config


def test_write_default_config_refuses_overwrite(tmp_path: Path) -> None:
    write_default_config(tmp_path, domain="example.test", host="h.example.test")
    with pytest.raises(ConfigError, match="already exists"):
        write_default_config(tmp_path, domain="example.test", host="h.example.test")
    write_default_config(tmp_path, domain="other.test", host="h.other.test", overwrite=True)
    assert load_config(tmp_path).server.domain == "other.test"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"transports": ["tls", "sctp"]}, "transports: unknown transport 'sctp'"),
        ({"tls_port": 70000}, "transports.tls_port: must be 0-65535"),
        ({"domain": "not a domain"}, "server.domain: must be a DNS name"),
        ({"transports": []}, "transports: enable at least one transport"),
    ],
)
def test_write_default_config_validates(
    tmp_path: Path, kwargs: dict[str, object], problem: str
) -> None:
    arguments: dict[str, object] = {"domain": "example.test", "host": "h.example.test"}
    arguments.update(kwargs)
    with pytest.raises(ConfigError) as info:
        write_default_config(tmp_path, **arguments)  # type: ignore[arg-type]
    assert info.value.problems[0].startswith(problem)
    assert not (tmp_path / CONFIG_FILENAME).exists()


def test_minimal_file_takes_defaults() -> None:
    config = loads_config(SERVER)
    assert config.transports.tls and not config.transports.udp
    assert config.logging.level == "info"


def test_human_readable_values() -> None:
    config = loads_config(
        SERVER + '[im]\noffline_max_age = "1h30m"\n'
        '[limits]\nban_seconds = "90s"\nmax_message_size = "16KiB"\nrequests_per_second = 5\n'
        '[auth]\nnonce_lifetime = 120\n[logging]\nlevel = "DEBUG"\n'
    )
    assert config.im.offline_max_age == 5400
    assert config.limits.ban_seconds == 90
    assert config.limits.max_message_size == 16384
    assert config.limits.requests_per_second == 5.0
    assert config.auth.nonce_lifetime == 120
    assert config.logging.level == "debug"
    assert loads_config(dumps_config(config)) == config


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[transports]\ntls_port = 70000\n", "transports.tls_port: must be 0-65535"),
        ("[transports]\ntls_port = -1\n", "transports.tls_port: must be 0-65535"),
        ('[transports]\ntls_port = "5061"\n', "transports.tls_port: must be an integer"),
        ("[transports]\ntlsport = 5061\n", "transports.tlsport: unknown key"),
        ('[transports]\ntls = "yes"\n', "transports.tls: must be true or false"),
        (
            "[transports]\ntls = false\n",
            "transports: enable at least one transport",
        ),
        (
            "[transports]\ntcp = true\nsip_port = 5061\n",
            "transports.sip_port: must differ from tls_port when both tls and tcp are on",
        ),
        (
            '[transports]\nbind = "localhost"\n',
            "transports.bind: must be an IP address such as 0.0.0.0 or ::, not 'localhost'",
        ),
        ("[bogus]\nx = 1\n", "bogus: unknown key"),
        ("[registrar]\nmin_expires = 0\n", "registrar.min_expires: must be at least 1"),
        (
            "[registrar]\nmax_expires = 30\n",
            "registrar.max_expires: must be at least default_expires",
        ),
        (
            '[im]\noffline_max_age = "7 days"\n',
            "im.offline_max_age: must be a duration such as 90s, 5m or 7d, not '7 days'",
        ),
        ("[im]\noffline_max_age = -5\n", "im.offline_max_age: must be a non-negative duration"),
        ("[im]\noffline_max_per_user = -1\n", "im.offline_max_per_user: must be at least 0"),
        (
            '[limits]\nmax_message_size = "1MiB"\n',
            "limits.max_message_size: must be 1KiB-64KiB",
        ),
        (
            '[limits]\nmax_message_size = "64XB"\n',
            "limits.max_message_size: unknown size unit 'XB': use B, KiB, MiB, GiB",
        ),
        (
            "[limits]\nrequests_per_second = 0\n",
            "limits.requests_per_second: must be greater than 0",
        ),
        ("[limits]\nburst = true\n", "limits.burst: must be an integer"),
        (
            '[auth]\nalgorithms = ["SHA-256", "SHA-512"]\n',
            "auth.algorithms[1]: must be 'SHA-256' or 'MD5'",
        ),
        ("[auth]\nalgorithms = []\n", "auth.algorithms: must list at least one algorithm"),
        (
            '[auth]\nalgorithms = ["MD5", "MD5"]\n',
            "auth.algorithms: must not repeat an algorithm",
        ),
        ('[auth]\nnonce_lifetime = "100ms"\n', "auth.nonce_lifetime: must be at least 1s"),
        (
            '[logging]\nlevel = "verbose"\n',
            "logging.level: must be 'debug', 'info', 'warning' or 'error'",
        ),
        (
            '[admin]\nbind = "127.0.0.1"\n',
            "admin.bind: must be host:port (IPv6 as [::1]:port), not '127.0.0.1'",
        ),
        ('[admin]\nbind = "127.0.0.1:99999"\n', "admin.bind: port must be 0-65535"),
        ('[tls]\ncert = ""\n', "tls.cert: must not be empty"),
        (
            "[transports]\ntls = false\nudp = true\n[web]\nenabled = true\n",
            "(top level): [web] enabled needs [transports] tls = true: "
            "the HTTPS listener serves the server's TLS certificate",
        ),
        (
            "[transports]\nws = true\n",
            "(top level): [transports] ws needs [web] enabled = true: "
            "SIP over WebSocket is served on the web listener",
        ),
    ],
)
def test_bad_values_name_the_key_path(text: str, problem: str) -> None:
    assert problems_of(SERVER + text) == [problem]


def test_server_section_errors() -> None:
    assert problems_of("transports = 5\n" + SERVER) == ["transports: must be a table"]
    assert problems_of("") == ["server: required key is missing"]
    assert problems_of('[server]\ndomain = "example.test"\n') == [
        "server.host: required key is missing"
    ]
    assert problems_of('[server]\ndomain = "bad domain"\nhost = "::1"\n') == [
        "server.domain: must be a DNS name, not 'bad domain'"
    ]


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILENAME).write_text(
        SERVER + "[transports]\ntls_port = -1\nudpp = true\n[logging]\nlevel = 3\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.problems == [
        "transports.tls_port: must be 0-65535",
        "transports.udpp: unknown key",
        "logging.level: must be 'debug', 'info', 'warning' or 'error'",
    ]
    lines = str(info.value).splitlines()
    assert lines[0] == f"{tmp_path / CONFIG_FILENAME}: transports.tls_port: must be 0-65535"
    assert len(lines) == 3


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"conclave.toml: not found \(run conclave init first\)"):
        load_config(tmp_path)
    (tmp_path / CONFIG_FILENAME).write_text("[server\n")
    with pytest.raises(ConfigError, match=r"conclave\.toml: invalid TOML: "):
        load_config(tmp_path)


def test_config_is_frozen() -> None:
    config = loads_config(SERVER)
    with pytest.raises(pydantic.ValidationError):
        config.server.domain = "other.test"


def test_writer_escapes_strings(tmp_path: Path) -> None:
    tricky = 'postgresql://u:p"w\\d\tx@db.example.test/conclave?application_name=é'
    config = loads_config(SERVER).model_copy(
        update={"database": loads_config(SERVER).database.model_copy(update={"url": tricky})}
    )
    write_config(tmp_path, config)
    text = (tmp_path / CONFIG_FILENAME).read_text()
    assert tomllib.loads(text)["database"]["url"] == tricky
    assert load_config(tmp_path).database.url == tricky


def test_paths_resolve_against_data_dir(tmp_path: Path) -> None:
    config = loads_config(SERVER + '[tls]\nca = "/etc/conclave/ca.crt"\n')
    assert config.path(tmp_path, config.tls.cert) == tmp_path / "tls" / "server.crt"
    assert config.path(tmp_path, config.tls.ca) == Path("/etc/conclave/ca.crt")
    assert config.database_url(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'conclave.db'}"
    absolute = loads_config(SERVER + '[database]\nurl = "sqlite:////var/lib/c.db"\n')
    assert absolute.database_url(tmp_path) == "sqlite:////var/lib/c.db"
    postgres = loads_config(SERVER + '[database]\nurl = "postgresql://127.0.0.1/test"\n')
    assert postgres.database_url(tmp_path) == "postgresql://127.0.0.1/test"


def test_admin_bind_forms() -> None:
    config = loads_config(SERVER + '[admin]\nenabled = true\nbind = "[::1]:8080"\n')
    assert config.admin.enabled and config.admin.bind == "[::1]:8080"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("7d", 604800), ("1h30m", 5400), ("500ms", 0.5), ("2w", 1209600)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "5x", "m5", "1h 30", True, None, "1.5.2s"])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(604800, "7d"), (300, "5m"), (90, "90s"), (0.5, "500ms"), (3600, "1h"), (0, "0s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("64KiB", 65536), ("1MiB", 1048576), ("10kB", 10000), ("512", 512), ("2 GiB", 2 * 1024**3)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_format_size() -> None:
    assert [format_size(n) for n in (65536, 1048576, 1000, 0)] == ["64KiB", "1MiB", "1000B", "0B"]


def test_model_has_every_documented_section() -> None:
    assert set(Config.model_fields) == {
        "server",
        "transports",
        "tls",
        "registrar",
        "im",
        "presence",
        "limits",
        "lockout",
        "auth",
        "logging",
        "logging_controller",
        "admin",
        "web",
        "database",
        "archive",
        "cdr",
        "media_relay",
        "edge",
        "trust",
        "federation",
        "director",
        "pool",
        "pairing",
    }


def test_presence_section_defaults_and_round_trip(tmp_path: Path) -> None:
    config = write_default_config(tmp_path, domain="example.test", host="sip.example.test")
    presence = config.presence
    assert presence.enabled
    assert (presence.min_expires, presence.default_expires, presence.max_expires) == (
        60,
        3600,
        7200,
    )
    assert (presence.publish_rate, presence.publish_burst) == (1.0, 10)
    assert presence.notify_merge_window == 0.2
    assert presence.external_watchers == "pending"
    text = (tmp_path / CONFIG_FILENAME).read_text()
    assert 'notify_merge_window = "200ms"' in text
    assert load_config(tmp_path) == config


def test_presence_section_values() -> None:
    config = loads_config(
        SERVER + '[presence]\nenabled = false\nnotify_merge_window = "0ms"\n'
        'min_expires = 1\nexternal_watchers = "allow"\n'
    )
    assert not config.presence.enabled
    assert config.presence.notify_merge_window == 0.0
    assert config.presence.external_watchers == "allow"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("min_expires = 0", "presence.min_expires: must be at least 1"),
        ("min_expires = 600\ndefault_expires = 60", "presence.default_expires: must be at least"),
        ("max_expires = 100", "presence.max_expires: must be at least default_expires"),
        ('notify_merge_window = "1m"', "presence.notify_merge_window: must be at most 10s"),
        ("publish_rate = 0", "presence.publish_rate: must be greater than 0"),
        ("publish_burst = 0", "presence.publish_burst: must be at least 1"),
        ('external_watchers = "maybe"', "presence.external_watchers: must be"),
        ("colour = 1", "presence.colour: unknown key"),
    ],
)
def test_presence_section_errors_name_the_key(text: str, problem: str) -> None:
    problems = problems_of(SERVER + "[presence]\n" + text + "\n")
    assert any(p.startswith(problem) for p in problems), problems


def test_tls_section_defaults_and_round_trip(tmp_path: Path) -> None:
    config = write_default_config(tmp_path, domain="example.test", host="sip.example.test")
    tls = config.tls
    assert (tls.cert, tls.key, tls.ca, tls.crl) == (
        "tls/server.crt",
        "tls/server.key",
        "ca/ca.crt",
        "ca/crl.pem",
    )
    assert tls.client_auth == "off" and tls.auto_renew is True
    assert tls.reload_poll == 5 and tls.warn_before == tls.renew_before == 30 * 86400
    text = (tmp_path / CONFIG_FILENAME).read_text()
    assert 'reload_poll = "5s"' in text and 'renew_before = "30d"' in text
    assert 'client_auth = "off"' in text
    assert load_config(tmp_path) == config


def test_tls_section_values() -> None:
    config = loads_config(
        SERVER + '[tls]\nclient_auth = "optional"\nreload_poll = "500ms"\n'
        'warn_before = "14d"\nrenew_before = "1h"\nauto_renew = false\n'
    )
    tls = config.tls
    assert tls.client_auth == "optional" and not tls.auto_renew
    assert (tls.reload_poll, tls.warn_before, tls.renew_before) == (0.5, 14 * 86400, 3600)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('client_auth = "required"', "tls.client_auth: must be 'off' or 'optional'"),
        ('reload_poll = "10ms"', "tls.reload_poll: must be 100ms-1h"),
        ('reload_poll = "2h"', "tls.reload_poll: must be 100ms-1h"),
        ('warn_before = "soon"', "tls.warn_before: must be a duration such as 90s, 5m or 7d"),
        ('auto_renew = "yes"', "tls.auto_renew: must be true or false"),
        ('crl = ""', "tls.crl: must not be empty"),
    ],
)
def test_tls_section_errors_name_the_key(text: str, problem: str) -> None:
    problems = problems_of(SERVER + "[tls]\n" + text + "\n")
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_archive_and_cdr_sections_defaults_and_round_trip(tmp_path: Path) -> None:
    config = write_default_config(tmp_path, domain="example.test", host="sip.example.test")
    archive, cdr = config.archive, config.cdr
    assert not archive.enabled  # off by default
    assert archive.internal and archive.federated and archive.critical
    assert (archive.directory, archive.site, archive.pool) == ("archive", "default", "default")
    assert (archive.retention, archive.segment_size, archive.write_timeout) == (0, 64 << 20, 5)
    assert cdr.enabled and cdr.registrations
    assert (cdr.retention, cdr.flush_interval, cdr.max_queue) == (60 * 86400, 1, 100_000)
    text = (tmp_path / CONFIG_FILENAME).read_text()
    assert "[archive]\n" in text and "[cdr]\n" in text
    assert 'segment_size = "64MiB"' in text and 'retention = "60d"' in text
    assert 'retention = "0s"' in text
    assert load_config(tmp_path) == config


def test_archive_and_cdr_section_values() -> None:
    config = loads_config(
        SERVER + "[archive]\nenabled = true\nfederated = false\ncritical = false\n"
        'retention = "365d"\nsite = "emea"\nwrite_timeout = "250ms"\n'
        '[cdr]\nenabled = false\nretention = "7d"\nflush_interval = "100ms"\n'
    )
    assert config.archive.enabled and not config.archive.federated
    assert not config.archive.critical and config.archive.site == "emea"
    assert (config.archive.retention, config.archive.write_timeout) == (365 * 86400, 0.25)
    assert not config.cdr.enabled
    assert (config.cdr.retention, config.cdr.flush_interval) == (7 * 86400, 0.1)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[archive]\nenabled = "yes"', "archive.enabled: must be true or false"),
        ('[archive]\nsegment_size = "1KiB"', "archive.segment_size: must be 1MiB-1GiB"),
        ('[archive]\nwrite_timeout = "2m"', "archive.write_timeout: must be 100ms-60s"),
        ('[archive]\npool = ""', "archive.pool: must not be empty"),
        ("[archive]\ncolour = 1", "archive.colour: unknown key"),
        ('[cdr]\nretention = "10m"', "cdr.retention: must be at least 1h"),
        ('[cdr]\nflush_interval = "2m"', "cdr.flush_interval: must be 10ms-60s"),
        ("[cdr]\nmax_queue = 5", "cdr.max_queue: must be at least 100"),
    ],
)
def test_archive_and_cdr_errors_name_the_key(text: str, problem: str) -> None:
    problems = problems_of(SERVER + text + "\n")
    assert len(problems) == 1 and problems[0].startswith(problem), problems


# --- [logging] and [logging_controller] ---------------------------------------------------


def test_logging_sections_defaults_and_round_trip(tmp_path: Path) -> None:
    config = write_default_config(tmp_path, domain="example.test", host="sip.example.test")
    logging_ = config.logging
    assert (logging_.controller, logging_.controller_name, logging_.controller_ca) == (
        "",
        "",
        "ca/ca.crt",
    )
    assert logging_.controller_acks is True and logging_.buffer_max == 64 * 1024**2
    controller = config.logging_controller
    assert controller.listen == "127.0.0.1:6514" and controller.store == "logs/events.db"
    assert controller.retention == 30 * 86400 and controller.client_cas == ("ca/ca.crt",)
    assert (controller.cert, controller.key) == ("", "")
    text = (tmp_path / CONFIG_FILENAME).read_text()
    assert 'buffer_max = "64MiB"' in text and 'retention = "30d"' in text
    assert 'client_cas = ["ca/ca.crt"]' in text
    assert load_config(tmp_path) == config


def test_logging_section_values() -> None:
    config = loads_config(
        SERVER + '[logging]\ncontroller = "Logs.Example.Test:6514"\ncontroller_acks = false\n'
        'controller_name = "collector.example.test"\nbuffer_max = "1MiB"\n'
        '[logging_controller]\nlisten = "[::1]:0"\nretention = "2h"\n'
        'client_cas = ["ca/ca.crt", "/etc/conclave/site-b-ca.crt"]\n'
        'cert = "tls/logs.crt"\nkey = "tls/logs.key"\n'
    )
    assert config.logging.controller == "logs.example.test:6514"
    assert config.logging.controller_name == "collector.example.test"
    assert config.logging.buffer_max == 1024**2 and not config.logging.controller_acks
    assert config.logging_controller.listen == "[::1]:0"
    assert config.logging_controller.retention == 7200
    assert config.logging_controller.client_cas[1] == "/etc/conclave/site-b-ca.crt"
    ipv6 = loads_config(SERVER + '[logging]\ncontroller = "[2001:db8::1]:6514"\n')
    assert ipv6.logging.controller == "[2001:db8::1]:6514"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[logging]\ncontroller = "logs.example.test"', "logging.controller: must be host:port"),
        ('[logging]\ncontroller = "logs:0"', "logging.controller: port must be 1-65535"),
        ('[logging]\ncontroller = "bad_name!:6514"', "logging.controller: must be a DNS name"),
        ('[logging]\ncontroller_name = "a b"', "logging.controller_name: must be a DNS name"),
        ('[logging]\nbuffer_max = "10KiB"', "logging.buffer_max: must be 1MiB-4GiB"),
        ('[logging]\nbuffer_max = "8GiB"', "logging.buffer_max: must be 1MiB-4GiB"),
        ('[logging]\ncontroller_acks = "no"', "logging.controller_acks: must be true or false"),
        ('[logging]\ncontroller_ca = ""', "logging.controller_ca: must not be empty"),
        ('[logging_controller]\nlisten = "logs:6514"', "logging_controller.listen: must be"),
        ('[logging_controller]\nretention = "10m"', "logging_controller.retention: must be at"),
        ("[logging_controller]\nclient_cas = []", "logging_controller.client_cas: must list"),
        ('[logging_controller]\ncert = "x.crt"', "logging_controller: cert and key must be"),
        ("[logging_controller]\nport = 1", "logging_controller.port: unknown key"),
    ],
)
def test_logging_sections_errors_name_the_key(text: str, problem: str) -> None:
    problems = problems_of(SERVER + text + "\n")
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_admin_section_enabled_with_a_port() -> None:
    config = loads_config(SERVER + '[admin]\nenabled = true\nbind = "127.0.0.1:9464"\n')
    assert config.admin.enabled and config.admin.bind == "127.0.0.1:9464"


def test_max_message_size_is_bounded_by_the_sip_hard_limit() -> None:
    from conclave.sip.limits import MAX_MESSAGE_SIZE, MIN_MESSAGE_SIZE_SETTING

    for size in (MIN_MESSAGE_SIZE_SETTING, MAX_MESSAGE_SIZE):
        text = SERVER + f"[limits]\nmax_message_size = {size}\n"
        assert loads_config(text).limits.max_message_size == size
    for size in (MIN_MESSAGE_SIZE_SETTING - 1, MAX_MESSAGE_SIZE + 1):
        text = SERVER + f"[limits]\nmax_message_size = {size}\n"
        assert problems_of(text) == ["limits.max_message_size: must be 1KiB-64KiB"]


# Every bounded setting: (section, key, lowest accepted, highest accepted, too low,
# too high, the message). None: no bound on that side. Values are TOML literals.
BOUNDS = [
    ("tls", "reload_poll", '"100ms"', '"1h"', '"99ms"', '"61m"', "must be 100ms-1h"),
    ("registrar", "min_expires", "1", None, "0", None, "must be at least 1"),
    (
        "registrar",
        "max_expires",
        None,
        "4294967295",
        None,
        "4294967296",
        "must be at most 4294967295",
    ),
    ("registrar", "max_contacts_per_aor", "1", None, "0", None, "must be at least 1"),
    ("im", "offline_max_per_user", "0", None, "-1", None, "must be at least 0"),
    ("presence", "min_expires", "1", None, "0", None, "must be at least 1"),
    ("presence", "publish_burst", "1", None, "0", None, "must be at least 1"),
    ("presence", "notify_merge_window", None, '"10s"', None, '"10001ms"', "must be at most 10s"),
    ("limits", "burst", "1", None, "0", None, "must be at least 1"),
    ("limits", "auth_failures_per_minute", "1", None, "0", None, "must be at least 1"),
    ("limits", "max_message_size", '"1KiB"', '"64KiB"', "1023", "65537", "must be 1KiB-64KiB"),
    ("auth", "nonce_lifetime", '"1s"', None, '"999ms"', None, "must be at least 1s"),
    ("logging", "buffer_max", '"1MiB"', '"4GiB"', '"1023KiB"', "4294967297", "must be 1MiB-4GiB"),
    ("logging_controller", "retention", '"1h"', None, '"59m"', None, "must be at least 1h"),
    ("archive", "segment_size", '"1MiB"', '"1GiB"', '"1023KiB"', '"1025MiB"', "must be 1MiB-1GiB"),
    ("archive", "write_timeout", '"100ms"', '"60s"', '"99ms"', '"61s"', "must be 100ms-60s"),
    ("cdr", "retention", '"1h"', None, '"59m"', None, "must be at least 1h"),
    ("cdr", "flush_interval", '"10ms"', '"60s"', '"9ms"', '"61s"', "must be 10ms-60s"),
    ("cdr", "max_queue", "100", None, "99", None, "must be at least 100"),
]


@pytest.mark.parametrize(("section", "key", "low", "high", "under", "over", "message"), BOUNDS)
def test_bounds_accept_their_limits_and_name_the_key_beyond(
    section: str,
    key: str,
    low: str | None,
    high: str | None,
    under: str | None,
    over: str | None,
    message: str,
) -> None:
    # max_expires must stay at least default_expires, so its section is filled in.
    extra = "default_expires = 60\n" if key == "max_expires" else ""
    for accepted in (low, high):
        if accepted is not None:
            loads_config(f"{SERVER}[{section}]\n{extra}{key} = {accepted}\n")
    for refused in (under, over):
        if refused is not None:
            text = f"{SERVER}[{section}]\n{extra}{key} = {refused}\n"
            assert problems_of(text) == [f"{section}.{key}: {message}"]


@pytest.mark.parametrize(
    ("text", "enabled"),
    [
        ("", [("tls", 5061)]),
        ("tcp = true\nudp = true\n", [("tls", 5061), ("tcp", 5060), ("udp", 5060)]),
        ("tls = false\nudp = true\nsip_port = 5070\n", [("udp", 5070)]),
        ("ws = true\n[web]\nenabled = true\n", [("tls", 5061)]),  # WebSocket: on the web listener
        ("tls_port = 0\ntcp = true\n", [("tls", 0), ("tcp", 5060)]),
    ],
)
def test_enabled_transports_in_listening_order(text: str, enabled: list[tuple[str, int]]) -> None:
    assert loads_config(f"{SERVER}[transports]\n{text}").transports.enabled() == enabled


def test_limits_max_ban_below_the_first_ban_is_refused() -> None:
    problems = problems_of(SERVER + '[limits]\nban_seconds = "2h"\nmax_ban_seconds = "1h"\n')
    assert any(
        p.startswith("limits: max_ban_seconds (3600s) must be at least ban_seconds (7200s)")
        for p in problems
    ), problems


def test_every_setting_description_is_one_line() -> None:
    """A description becomes a `# comment` above its key in the written file: a second line
    would be written as TOML and break the file."""
    from pydantic import BaseModel

    def sections(model: type[BaseModel]) -> list[type[BaseModel]]:
        found = [model]
        for info in model.model_fields.values():
            kind = info.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                found += sections(kind)
        return found

    for section in sections(Config):
        for name, info in section.model_fields.items():
            assert "\n" not in (info.description or ""), f"{section.__name__}.{name}"
