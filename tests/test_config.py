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
    format_duration,
    format_size,
    load_config,
    loads_config,
    parse_duration,
    parse_size,
    write_config,
    write_default_config,
)

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
        "limits",
        "auth",
        "logging",
        "admin",
        "database",
    }
