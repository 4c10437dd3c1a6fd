"""Hard limits of the SIP core, each a named constant with the reason for its size.

These bound memory and CPU per message and per connection, so that hostile
input costs at most linear work in the bytes actually received.
"""

from __future__ import annotations

MAX_MESSAGE_SIZE = 64 * 1024
"""Largest whole message (start line + headers + body) accepted, in octets.

64 KiB is the largest UDP datagram and is far above any real SIP signalling
message (RFC 3261 §18.1.1 assumes messages well under the path MTU). Larger
messages get 413 (or the stream is closed when framing cannot continue).

A deployment may lower it (``[limits] max_message_size``, which the stream
framer and the UDP listener enforce) but never raise it: the parser refuses
anything larger whatever the configuration says."""

MIN_MESSAGE_SIZE_SETTING = 1024
"""Smallest ``[limits] max_message_size`` a deployment may configure. Below
1 KiB even a REGISTER carrying digest credentials (600-900 octets) would not
fit, so the server could not be used at all."""

MAX_HEADER_SECTION = 32 * 1024
"""Largest start line plus header section, in octets. Half the message limit
leaves room for a body; real header sections are a few KiB."""

MAX_LINE_LENGTH = 8 * 1024
"""Longest single line (after unfolding), in octets. RFC 4475's longreq
torture message has lines of about 700 octets; 8 KiB gives ample slack while
stopping a peer from making the parser scan megabyte-long lines."""

MAX_HEADER_COUNT = 256
"""Most header fields in one message. longreq has about 40; a limit keeps
per-message work and the header list bounded."""

MAX_VIA_COUNT = 70
"""Most Via values. A request that crossed more hops than Max-Forwards
(default 70) allows is a loop or an attack."""

MAX_CSEQ = 2**31 - 1
"""CSeq sequence numbers MUST be less than 2**31 (RFC 3261 §8.1.1.5)."""

MAX_MAX_FORWARDS = 255
"""Max-Forwards is 0-255 (RFC 3261 §20.22, an 8-bit hop count)."""

MAX_STATUS = 699
MIN_STATUS = 100
"""Status codes are three digits, 100-699 (RFC 3261 §7.2, §21)."""

MAX_EXPIRES = 2**32 - 1
"""Expires and expires= are delta-seconds, at most 2**32-1 (RFC 3261 §25.1)."""

MAX_PARAMS = 64
"""Most parameters on one header value or URI; bounds the per-value work."""

MAX_DIGEST_NONCES = 16 * 1024
"""Most digest nonces whose last nonce-count is remembered at once (RFC 7616 §3.4,
replay protection). An entry exists only for a nonce that has already authenticated
a request, and costs a few hundred octets, so the table stays around 5 MB. Live
nonces number about the clients that authenticated within one nonce lifetime;
beyond that the nonce issued longest ago is forgotten, and its next use gets a
401 with stale=true (one extra round trip, never an accepted replay)."""
