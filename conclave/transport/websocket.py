"""SIP over WebSocket (RFC 7118) as a flow of the transport manager.

The WebSocket itself (the HTTP upgrade, framing, pings) belongs to the web
listener (:mod:`conclave.web.sipws`, uvicorn with wsproto). What reaches this
module is a *channel*: whole messages in, whole messages out. A
:class:`WebSocketConnection` makes that channel a stream connection like any
other in the manager's table (limits per source, bans, idle sweep, closure
telling the stack so that bindings on the flow go), with two differences:

* each WebSocket message is exactly one SIP message (RFC 7118 §5: no
  Content-Length framing, no CRLF keep-alives), so there is no framer, and
  answers are never batched into one write (each must stay its own message);
* writes go to the channel's queue; :meth:`MessageChannel.buffered` is what
  the slow-reader check reads.
"""

from __future__ import annotations

from typing import Any, Protocol

from conclave.sip.errors import RemoteProtocolError
from conclave.sip.flow import Flow
from conclave.transport.stream import StreamConnection, StreamHost


class MessageChannel(Protocol):
    """What the web listener gives for one accepted WebSocket."""

    def send(self, data: bytes) -> None:
        """Queue ``data`` as one WebSocket message."""
        ...

    def buffered(self) -> int:
        """Octets queued and not yet written to the socket."""
        ...

    def close(self) -> None:
        """Close after what is queued (WebSocket close 1000)."""
        ...

    def abort(self) -> None:
        """Close now, dropping what is queued."""
        ...


class _ChannelTransport:
    """The slice of ``asyncio.Transport`` that :class:`StreamConnection` uses."""

    def __init__(self, channel: MessageChannel) -> None:
        self._channel = channel
        self._closing = False

    def write(self, data: bytes) -> None:
        if not self._closing:
            self._channel.send(data)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._channel.close()

    def abort(self) -> None:
        self._closing = True
        self._channel.abort()

    def get_write_buffer_size(self) -> int:
        return self._channel.buffered()

    def get_extra_info(self, _name: str, default: Any = None) -> Any:
        return default  # no peer certificate, no socket: the web listener has them


class WebSocketConnection(StreamConnection):
    """One SIP-over-WebSocket connection in the manager's table (see the module doc)."""

    def __init__(self, manager: StreamHost, flow: Flow, channel: MessageChannel) -> None:
        super().__init__(manager, flow.transport, flow=flow)
        self.transport = _ChannelTransport(channel)  # type: ignore[assignment]
        self.established = True

    def receive_message(self, data: bytes) -> None:
        """One WebSocket message from the peer: one SIP message."""
        if self.closed:
            return
        manager = self._manager
        manager.connection_received(self)
        if self.closed:  # its source was banned meanwhile
            return
        if len(data) > manager.max_message_size:
            manager.framing_error(
                self, RemoteProtocolError("message larger than the size limit", 413)
            )
            return
        if not data.strip(b"\r\n \t"):
            return  # an empty message carries nothing (RFC 7118 has no CRLF keep-alive)
        flow = self.flow
        assert flow is not None
        manager.deliver(data, flow)

    def alive(self) -> None:
        """The WebSocket is still open (its pings are answered): not idle.

        A browser sends nothing between re-registrations, which may be further
        apart than the idle timeout; the web listener's pings find a dead peer
        instead, so the web side calls this while the WebSocket lives. A source
        banned meanwhile is closed here too."""
        if not self.closed:
            self._manager.connection_received(self)

    def channel_lost(self) -> None:
        """The WebSocket closed (either side): the flow is gone."""
        self.connection_lost(None)
