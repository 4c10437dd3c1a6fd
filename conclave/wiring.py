"""Which features a Front End runs: the one list to add a feature to.

Each entry is a feature package's ``build(setup)``: it returns the feature,
or None when the configuration leaves it off (then it is never constructed
and registers nothing). Order matters only where one feature builds on an
earlier one (presence follows the call tracker) and for hooks at the same
point, which run in this order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conclave.config import Config
from conclave.core.auth import Authenticator, CredentialCache
from conclave.core.dialogs import DialogTable
from conclave.core.features import Feature, FeatureHost, Registry
from conclave.core.locations import Binding
from conclave.core.proxy import Proxy
from conclave.core.router import EdgeLink, EdgeRoutes, MemberRelay, Reach, Router
from conclave.core.signin import CertificateUser, ClientSource, SignIn
from conclave.core.stack import SipStack
from conclave.ops.lockout import lockout_from_config
from conclave.services import activity, archive, calls, cdr, im, registrar, relay
from conclave.services.location import MemoryLocationService
from conclave.services.presence import feature as presence
from conclave.services.presence.state import PresenceState
from conclave.services.setup import Setup
from conclave.sip.flow import Flow
from conclave.sip.local import LocalEndpoint
from conclave.store.database import Database
from conclave.transport.guard import SourceGuard

Builder = Callable[[Setup], Feature | None]

FEATURES: tuple[Builder, ...] = (
    registrar.build,
    im.build,
    archive.build,
    cdr.build,
    calls.build,
    activity.build,
    presence.build,
    relay.build,
)


def build_features(setup: Setup, host: FeatureHost) -> dict[str, Feature]:
    """Build every enabled feature and register it with ``host``, in order."""
    for builder in FEATURES:
        feature = builder(setup)
        if feature is None:
            continue
        feature.register(host)
        setup.built[feature.name] = feature
    return setup.built


@dataclass
class Assembly:
    """A Front End's request path, as :func:`assemble` built it."""

    host: FeatureHost
    features: dict[str, Feature]
    proxy: Proxy
    router: Router
    signin: SignIn


def assemble(
    config: Config,
    data_dir: Path,
    db: Database,
    *,
    stack: SipStack,
    local: LocalEndpoint,
    location: MemoryLocationService,
    users: CredentialCache,
    guard: SourceGuard,
    reach: Reach,
    certificate_user: CertificateUser | None = None,
    client_source: ClientSource | None = None,
    federation: EdgeLink | None = None,
    is_edge: Callable[[Flow], bool] | None = None,
    director: Callable[[Flow], bool] | None = None,
    edge_routes: EdgeRoutes | None = None,
    device_flow: Callable[[Binding], Flow | None] | None = None,
    members: MemberRelay | None = None,
    presence_state: PresenceState | None = None,
) -> Assembly:
    """Build the core (sign-in, proxy, router) and every enabled feature around
    ``stack``: what a Front End process runs (``Server._wire``) and what the
    in-memory core tests run, from one place. Attach the router to the stack."""
    host = FeatureHost(
        registry=Registry(), stack=stack, local=local, location=location, users=users
    )
    if device_flow is not None:
        host.device_flow = device_flow
    features = build_features(
        Setup(
            config,
            data_dir,
            db,
            host,
            location,
            pool_member=bool(config.pool.redis),
            presence_state=presence_state,
        ),
        host,
    )
    proxy = Proxy(stack, local, DialogTable())
    auth = Authenticator(
        realm=config.server.domain,
        users=users,
        nonce_lifetime=config.auth.nonce_lifetime,
        algorithms=tuple(config.auth.algorithms),
        md5_only_agents=tuple(config.auth.md5_only_user_agents),
    )
    lockout = lockout_from_config(config.lockout)
    signin = SignIn(
        stack,
        auth,
        users,
        guard,
        certificate_user=certificate_user,
        lockout=lockout,
        client_source=client_source,
        director=director,
    )
    router = Router(
        host=host,
        proxy=proxy,
        signin=signin,
        reach=reach,
        edges=frozenset((*config.trust.edges, *config.trust.directors, *config.pool.members)),
        federation=federation,
        is_edge=is_edge,
        edge_routes=edge_routes,
        members=members,
    )
    return Assembly(host, features, proxy, router, signin)
