"""Value types and validators of ``conclave.toml``: durations, sizes, ports, host
names, endpoints, and the base every section model shares (:mod:`conclave.config`)."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    Strict,
)

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SIZE_UNITS = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_SIZE_UNITS |= {"KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}
_SIZE = re.compile(r"(\d+)\s*([A-Za-z]*)")


def parse_duration(value: object) -> float:
    """Seconds from ``"90s"``, ``"5m"``, ``"1h30m"``, ``"500ms"`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 90s, 5m or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"must be a duration such as 90s, 5m or 7d, not {value!r}")
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        raise ValueError("must be a duration such as 90s, 5m or 7d")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("must be a non-negative duration")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` in the largest whole unit ("7d", "90s")."""
    for unit in ("d", "h", "m", "s", "ms"):
        count = seconds / _DURATION_UNITS[unit]
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds}s" if seconds else "0s"


def parse_size(value: object) -> int:
    """Bytes from ``"64KiB"``, ``"1MiB"``, ``"10kB"`` (decimal) or a plain integer."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 64KiB or 1MiB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        unit = match.group(2).upper() or "B"
        if unit not in _SIZE_UNITS:
            raise ValueError(f"unknown size unit {match.group(2)!r}: use B, KiB, MiB, GiB")
        size = int(match.group(1)) * _SIZE_UNITS[unit]
    else:
        raise ValueError(f"must be a size such as 64KiB or 1MiB, not {value!r}")
    if size < 0:
        raise ValueError("must be a non-negative size")
    return size


def format_size(size: int) -> str:
    """The largest binary unit that divides ``size`` exactly ("64KiB")."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError("must be 0-65535")  # 0: a free port, named in the log
    return value


def _host_name(value: str) -> str:
    host = value.strip().lower().rstrip(".")
    label = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
    if len(host) > 253 or not re.fullmatch(rf"{label}(\.{label})*", host):
        raise ValueError(f"must be a DNS name, not {value!r}")
    return host


def _host(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        return _host_name(value)


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"must be an IP address such as 0.0.0.0 or ::, not {value!r}") from None


def _host_port(value: str) -> str:
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", value.strip())
    if not match:
        raise ValueError(f"must be host:port (IPv6 as [::1]:port), not {value!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError("port must be 0-65535")
    host = _ip(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _not_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be greater than 0")
    return float(value)


Bool = Annotated[bool, Strict()]
Int = Annotated[int, Strict()]
Str = Annotated[str, Strict()]
Number = Annotated[float, BeforeValidator(_number)]
Port = Annotated[int, Strict(), AfterValidator(_port)]
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""Seconds, written in the file as "90s", "5m", "7d"..."""
Size = Annotated[int, BeforeValidator(parse_size), PlainSerializer(format_size, return_type=str)]
"""Bytes, written in the file as "64KiB", "1MiB"..."""
RelPath = Annotated[str, Strict(), AfterValidator(_not_empty)]


def _within(unit: Callable[[Any], float], low: Any = None, high: Any = None) -> AfterValidator:
    """A field constraint: the value must be at least ``low`` and at most ``high``.

    Either bound may be None (no bound). Bounds are written in the field's own
    unit ("1h", "100ms", "1MiB", or a plain number) and ``unit`` reads them
    (:func:`parse_duration`, :func:`parse_size`, ``int``); the error quotes them
    as written: "must be at least 1h", "must be at most 10s", "must be 1MiB-1GiB".
    Put it after the type: ``Annotated[Duration, _within(parse_duration, "1h")]``.
    """
    lowest = None if low is None else unit(low)
    highest = None if high is None else unit(high)
    if lowest is not None and highest is not None:
        message = f"must be {low}-{high}"
    elif lowest is not None:
        message = f"must be at least {low}"
    else:
        message = f"must be at most {high}"

    def check(value: Any) -> Any:
        if (lowest is not None and value < lowest) or (highest is not None and value > highest):
            raise ValueError(message)
        return value

    return AfterValidator(check)


class _Section(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_default=True, use_attribute_docstrings=True
    )


def _endpoint(value: str) -> str:
    """``host:port`` (a DNS name or IP; IPv6 in brackets), or empty for none."""
    text = value.strip()
    if not text:
        return ""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", text)
    if not match:
        raise ValueError(f"must be host:port (IPv6 as [::1]:port), not {value!r}")
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise ValueError("port must be 1-65535")
    host = _ip(match.group(1)) if match.group(1) else _host(match.group(3))
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_or_empty(value: str) -> str:
    return _host(value) if value.strip() else ""
