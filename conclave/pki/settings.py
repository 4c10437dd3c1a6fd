"""From ``conclave.toml`` to the PKI's own settings objects.

The server and the ``conclave certs`` commands resolve paths the same way
through these functions, so they always agree on which files are in use.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from conclave.config import Config
from conclave.pki.lifecycle import RenewalPolicy
from conclave.pki.reload import STATUS_FILE, TlsFiles
from conclave.pki.validate import required_names

IMPORTED_DIR = "tls/imported"
"""Certificates from public CAs (``conclave certs import``), one directory each."""

CLIENTS_DIR = "tls/clients"
"""Client certificates issued for users (``conclave certs issue --client``)."""

ISSUED_DIR = "tls/issued"
"""Server certificates issued for other servers of the pool (``issue --host``)."""


def ca_directory(data_dir: Path, config: Config) -> Path:
    """The internal CA's directory (where ``ca.crt`` lives)."""
    return config.path(data_dir, config.tls.ca).parent


def server_required_names(config: Config) -> tuple[str, ...]:
    """The names the server certificate must cover: host, domain and ``sip.<domain>``."""
    return required_names(config.server.host, config.server.domain)


def server_tls_files(data_dir: Path, config: Config) -> TlsFiles:
    """The server's TLS files and requirements as ``[tls]`` describes them."""
    tls = config.tls
    return TlsFiles(
        cert=config.path(data_dir, tls.cert),
        key=config.path(data_dir, tls.key),
        ca=config.path(data_dir, tls.ca),
        crl=config.path(data_dir, tls.crl),
        required=server_required_names(config),
        # Edges and pool members present certificates: ask for one (clients need not send any).
        client_auth=tls.client_auth == "optional"
        or bool(config.trust.edges or config.trust.directors or config.pool.members),
        status=Path(data_dir) / STATUS_FILE,
    )


def renewal_policy(config: Config) -> RenewalPolicy:
    """``[tls]`` timing: poll interval, warning and renewal windows."""
    tls = config.tls
    return RenewalPolicy(
        poll=tls.reload_poll,
        warn_before=dt.timedelta(seconds=tls.warn_before),
        renew_before=dt.timedelta(seconds=tls.renew_before),
        auto_renew=tls.auto_renew,
    )
