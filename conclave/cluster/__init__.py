"""Pool state shared by the Front Ends of an Enterprise pool (docs/pools.md).

A pool's members keep registrations and presence publications in Redis and
tell each other of every change over one pub/sub channel. Each member holds a
full copy in memory, so nothing on the request path waits on Redis: writes are
queued and sent in the background, reads are dict lookups.

- :mod:`.state`: the connection to Redis, the write queue, the event channel and
  the members' heartbeats.
- :mod:`.tokens`: the flow tokens a member names its own client connections by.
- :mod:`.locations`: the pool-wide location service.
- :mod:`.presence`: the pool-wide presence publications.
"""
