"""Feature services: each module owns one SIP feature (RFC 3261 §10 registrar, ...).

A service is constructed and wired by the core only when the topology enables
it. Services keep their state in memory and never make the request path wait
on the database; see :mod:`conclave.services.location` for the pattern.
"""
