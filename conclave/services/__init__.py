"""Features: one package per feature (registrar, im, archive, cdr, calls, presence).

Each has ``build(setup) -> Feature | None`` (:mod:`conclave.services.setup`)
and registers with the core's :class:`~conclave.core.features.FeatureHost`
only when the configuration enables it; the one list of builders is
:data:`conclave.wiring.FEATURES`, and :meth:`conclave.server.Server._wire`
runs it. Features keep their state in memory and never make the request path
wait on the database (see :mod:`conclave.services.location` for the pattern);
they reach the network only through the core, never the transport.
"""
