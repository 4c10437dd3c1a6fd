"""Which features a Front End runs: the one list to add a feature to.

Each entry is a feature package's ``build(setup)``: it returns the feature,
or None when the configuration leaves it off (then it is never constructed
and registers nothing). Order matters only where one feature builds on an
earlier one (presence follows the call tracker) and for hooks at the same
point, which run in this order.
"""

from __future__ import annotations

from collections.abc import Callable

from conclave.core.features import Feature, FeatureHost
from conclave.services import activity, archive, calls, cdr, im, registrar
from conclave.services.presence import feature as presence
from conclave.services.setup import Setup

Builder = Callable[[Setup], Feature | None]

FEATURES: tuple[Builder, ...] = (
    registrar.build,
    im.build,
    archive.build,
    cdr.build,
    calls.build,
    activity.build,
    presence.build,
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
