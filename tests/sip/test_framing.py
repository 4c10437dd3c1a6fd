"""Tests for conclave.sip.framing (RFC 3261 §18.3 stream framing, RFC 5626 keep-alives)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conclave.sip.errors import LocalProtocolError, RemoteProtocolError
from conclave.sip.framing import PONG, Frame, KeepAlive, StreamFramer


def msg(body: bytes = b"", *, cl: bytes | None = None, extra: bytes = b"") -> bytes:
    length = str(len(body)).encode() if cl is None else cl
    return (
        b"MESSAGE sip:bob@example.test SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP client.example.test;branch=z9hG4bK776asdhds\r\n"
        b"Max-Forwards: 70\r\n" + extra + b"Content-Length: " + length + b"\r\n\r\n" + body
    )


def frames(data: bytes, framer: StreamFramer | None = None) -> list[Frame | KeepAlive]:
    return (framer or StreamFramer()).feed(data)


def one_byte_at_a_time(data: bytes, framer: StreamFramer | None = None) -> list[object]:
    f = framer or StreamFramer()
    out: list[object] = []
    for i in range(len(data)):
        out += f.feed(data[i : i + 1])
    return out


def test_single_message_and_body_start() -> None:
    m = msg(b"hello")
    [frame] = frames(m)
    assert frame == Frame(m, len(m) - 5)
    assert frame.data[frame.body_start :] == b"hello"
    assert frame.data[: frame.body_start].endswith(b"\r\n\r\n")


def test_binary_body_containing_crlfcrlf() -> None:
    body = b"\r\n\r\n\x00\xff\r\nINVITE sip:x SIP/2.0\r\nContent-Length: 99\r\n\r\n"
    stream = msg(body) + msg(b"\r\n\r\n") + msg()
    got = frames(stream)
    assert [f.data for f in got if isinstance(f, Frame)] == [msg(body), msg(b"\r\n\r\n"), msg()]
    assert one_byte_at_a_time(stream) == got


def test_many_messages_in_one_chunk() -> None:
    messages = [msg(str(i).encode() * i) for i in range(200)]
    got = frames(b"".join(messages))
    assert [f.data for f in got if isinstance(f, Frame)] == messages


def test_partial_message_needs_more_data() -> None:
    f = StreamFramer()
    m = msg(b"abc")
    assert f.feed(m[:-1]) == []
    assert f.next_event() is None
    assert f.buffered == len(m) - 1
    assert f.feed(m[-1:]) == [Frame(m, len(m) - 3)]
    assert f.buffered == 0


def test_keep_alives_interleaved() -> None:
    stream = (
        b"\r\n\r\n" + msg(b"a") + b"\r\n\r\n\r\n\r\n" + msg() + b"\r\n" + msg(b"b") + b"\r\n\r\n"
    )
    expected = [KeepAlive(), Frame(msg(b"a"), len(msg(b"a")) - 1), KeepAlive(), KeepAlive()]
    expected += [Frame(msg(), len(msg())), Frame(msg(b"b"), len(msg(b"b")) - 1), KeepAlive()]
    assert frames(stream) == expected
    assert one_byte_at_a_time(stream) == expected
    assert KeepAlive().pong == PONG == b"\r\n"


def test_lone_crlf_is_ignored_and_half_ping_waits() -> None:
    f = StreamFramer()
    assert f.feed(b"\r\n") == []  # could be the first half of a ping
    assert f.feed(b"\r") == []
    assert f.feed(b"\n") == [KeepAlive()]
    assert f.feed(b"\r\n") == []
    assert f.feed(msg()) == [Frame(msg(), len(msg()))]  # the CRLF before it is ignored
    assert f.feed(b"\r\n\r\n\r\n") == [KeepAlive()]
    assert f.buffered == 2


def test_bare_lf_does_not_end_headers() -> None:
    f = StreamFramer(max_header_section=200)
    assert f.feed(b"OPTIONS sip:x SIP/2.0\nl: 0\n\n") == []
    with pytest.raises(RemoteProtocolError):
        f.feed(b"x" * 200)


@pytest.mark.parametrize(
    ("header", "length"),
    [
        (b"l: 3", 3),
        (b"L:3", 3),
        (b"CONTENT-LENGTH: 3", 3),
        (b"content-length \t:   3  ", 3),
        (b"Content-Length: 0003", 3),
        (b"Content-Length:\r\n 3", 3),
        (b"Content-Length:\r\n\t\r\n  3\r\n ", 3),
        (b"Content-Length: 0", 0),
        (b"Content-Length: 00000000000000000000000000000", 0),
    ],
)
def test_content_length_forms(header: bytes, length: int) -> None:
    m = b"INFO sip:x SIP/2.0\r\nCall-ID: a\r\n" + header + b"\r\nAllow: l\r\n\r\n" + b"xyz"[:length]
    [frame] = frames(m + msg())[:1]
    assert isinstance(frame, Frame)
    assert frame.data == m
    assert len(frame.data) - frame.body_start == length


def test_identical_duplicate_content_length_is_accepted() -> None:
    m = b"INFO sip:x SIP/2.0\r\nl: 2\r\nContent-Length: 02\r\n\r\nok"
    assert frames(m) == [Frame(m, len(m) - 2)]


def test_lookalike_headers_are_not_content_length() -> None:
    m = b"INFO sip:x SIP/2.0\r\nlx: 5\r\nContent-Lengths: 9\r\nX-l: 9\r\nl: 0\r\n\r\n"
    assert frames(m) == [Frame(m, len(m))]


@pytest.mark.parametrize(
    ("stream", "status"),
    [
        (b"INFO sip:x SIP/2.0\r\nVia: a\r\n\r\n", 400),  # missing
        (b"l: 0\r\n\r\n", 400),  # the start line is not a header
        (b"INFO sip:x SIP/2.0\r\nl\t: 0\r\n : 0\r\n\r\n", 400),  # fold makes "0 : 0"
        (msg(cl=b"-1"), 400),
        (msg(cl=b"+1"), 400),
        (msg(cl=b"1.0"), 400),
        (msg(cl=b"0x10"), 400),
        (msg(cl=b"1 2"), 400),
        (msg(cl=b"1, 1"), 400),
        (msg(cl=b""), 400),
        (msg(cl=b"\xd9\xa3"), 400),  # ARABIC-INDIC DIGIT THREE is not a DIGIT
        (msg(extra=b"l: 1\r\n"), 400),  # conflicting values
        (msg(extra=b"Content-Length: 0\r\nl: 0\r\nCONTENT-LENGTH: 7\r\n", cl=b"0"), 400),
        (msg(cl=b"65537"), 413),
        (msg(cl=b"99999999999999999999"), 413),
        (msg(cl=b"9" * 5000), 413),  # no int() of a 5000-digit string
    ],
)
def test_bad_content_length(stream: bytes, status: int) -> None:
    for feed in (frames, one_byte_at_a_time):
        with pytest.raises(RemoteProtocolError) as info:
            feed(stream)
        assert info.value.status == status
        assert info.value.reason


def test_oversized_content_length_is_refused_before_the_body() -> None:
    f = StreamFramer()
    header = b"INVITE sip:x SIP/2.0\r\nContent-Length: 1000000\r\n"
    assert f.feed(header) == []  # a folded continuation could still follow
    with pytest.raises(RemoteProtocolError) as info:
        f.feed(b"V")  # the field is complete: refuse before the empty line arrives
    assert info.value.status == 413


def test_message_size_limit_counts_headers_and_body() -> None:
    size = len(msg(b"x" * 100))
    ok = StreamFramer(max_message_size=size)
    assert len(ok.feed(msg(b"x" * 100))) == 1
    too_big = StreamFramer(max_message_size=size - 1)
    with pytest.raises(RemoteProtocolError) as info:
        too_big.feed(msg(b"x" * 100)[: size - 100])  # headers only
    assert info.value.status == 413


def test_header_section_limit_exact_boundary() -> None:
    m = msg(b"body")
    section = m.index(b"\r\n\r\n") + 2  # start line + header lines with their CRLFs
    for feed in (frames, one_byte_at_a_time):
        assert len(feed(m, StreamFramer(max_header_section=section))) == 1
        with pytest.raises(RemoteProtocolError) as info:
            feed(m, StreamFramer(max_header_section=section - 1))
        assert info.value.status == 413


def test_header_section_limit_raised_while_buffering() -> None:
    f = StreamFramer(max_header_section=1000)
    f.feed(b"OPTIONS sip:x SIP/2.0\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(100):
            f.feed(b"X-Pad: " + b"y" * 20 + b"\r\n")
    assert info.value.status == 413
    assert f.buffered == 0  # released on error


def test_line_length_limit() -> None:
    line = b"X-Long: " + b"a" * 92  # exactly 100 octets
    ok = b"INFO sip:x SIP/2.0\r\n" + line + b"\r\nl: 0\r\n\r\n"
    for feed in (frames, one_byte_at_a_time):
        assert len(feed(ok, StreamFramer(max_line_length=100))) == 1
        with pytest.raises(RemoteProtocolError) as info:
            feed(ok.replace(line, line + b"a"), StreamFramer(max_line_length=100))
        assert info.value.status == 400
    # A partial line is refused as soon as it is too long, before its CRLF arrives.
    f = StreamFramer(max_line_length=100)
    f.feed(b"INFO sip:x SIP/2.0\r\n" + line)
    with pytest.raises(RemoteProtocolError):
        f.feed(b"a")


def test_folded_lines_count_towards_the_line_limit() -> None:
    folded = (
        b"INFO sip:x SIP/2.0\r\nSubject: " + b"a" * 50 + b"\r\n " + b"b" * 50 + b"\r\nl: 0\r\n\r\n"
    )
    assert len(frames(folded, StreamFramer(max_line_length=200))) == 1
    with pytest.raises(RemoteProtocolError) as info:
        frames(folded, StreamFramer(max_line_length=100))
    assert info.value.status == 400
    f = StreamFramer(max_line_length=100)
    f.feed(b"INFO sip:x SIP/2.0\r\nSubject: " + b"a" * 50 + b"\r\n " + b"b" * 40)
    with pytest.raises(RemoteProtocolError):
        f.feed(b"b")  # the unfinished continuation already exceeds the limit


def test_start_line_is_subject_to_the_line_limit() -> None:
    with pytest.raises(RemoteProtocolError):
        frames(
            b"INFO sip:" + b"x" * 200 + b" SIP/2.0\r\nl: 0\r\n\r\n",
            StreamFramer(max_line_length=100),
        )


def test_header_count_limit() -> None:
    def with_fields(n: int) -> bytes:
        pad = b"".join(b"X-%d: v\r\n x\r\n" % i for i in range(n - 1))  # folding adds no field
        return b"INFO sip:x SIP/2.0\r\n" + pad + b"l: 0\r\n\r\n"

    assert len(frames(with_fields(10), StreamFramer(max_header_count=10))) == 1
    for feed in (frames, one_byte_at_a_time):
        with pytest.raises(RemoteProtocolError) as info:
            feed(with_fields(11), StreamFramer(max_header_count=10))
        assert info.value.status == 400


def test_default_limits_reject_many_short_lines() -> None:
    f = StreamFramer()
    with pytest.raises(RemoteProtocolError):
        f.feed(b"INFO sip:x SIP/2.0\r\n" + b"a: b\r\n" * 10_000)


def test_ten_megabytes_of_junk_without_crlf() -> None:
    f = StreamFramer()
    chunk = b"A" * 65536
    fed = 0
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(160):  # 10 MiB
            f.feed(chunk)
            fed += len(chunk)
    assert info.value.status == 400
    assert fed == 0  # the first chunk already exceeded the line limit
    with pytest.raises(RemoteProtocolError):
        StreamFramer().feed(b"B" * (10 * 1024 * 1024))
    g = StreamFramer()
    with pytest.raises(RemoteProtocolError):
        for _ in range(100_000):
            g.feed(b"C")


def test_error_state_is_terminal() -> None:
    f = StreamFramer()
    with pytest.raises(RemoteProtocolError):
        f.feed(msg(cl=b"x"))
    with pytest.raises(LocalProtocolError):
        f.feed(msg())
    with pytest.raises(LocalProtocolError):
        f.next_event()
    with pytest.raises(LocalProtocolError):
        f.receive_data(b"")


def test_next_event_delivers_messages_before_an_error() -> None:
    f = StreamFramer()
    f.receive_data(msg(b"1") + b"\r\n\r\n" + msg(cl=b"nope"))
    assert f.next_event() == Frame(msg(b"1"), len(msg(b"1")) - 1)
    assert f.next_event() == KeepAlive()
    with pytest.raises(RemoteProtocolError):
        f.next_event()


def test_constructor_checks_limits() -> None:
    with pytest.raises(LocalProtocolError):
        StreamFramer(max_line_length=0)


# --------------------------------------------------------------------------- properties

_bodies = st.binary(max_size=200) | st.sampled_from([b"\r\n\r\n", b"\r\n", b"\r\nl: 5\r\n\r\n"])
_items = st.one_of(
    _bodies.map(lambda b: ("msg", b)),
    st.sampled_from([("ping", b"\r\n\r\n"), ("crlf", b"\r\n")]),
)


def _expected(items: list[tuple[str, bytes]]) -> tuple[bytes, list[object]]:
    stream = b""
    events: list[object] = []
    pending_crlf = False  # a lone CRLF joins a following one into a ping
    for kind, payload in items:
        if kind == "msg":
            pending_crlf = False
            m = msg(payload)
            stream += m
            events.append(Frame(m, len(m) - len(payload)))
        elif kind == "ping":
            stream += payload
            events.append(KeepAlive())
        else:
            stream += payload
            if pending_crlf:
                events.append(KeepAlive())
            pending_crlf = not pending_crlf
    return stream, events


@settings(max_examples=300)
@given(st.lists(_items, max_size=12), st.lists(st.integers(0, 5000), max_size=30))
def test_any_split_yields_the_same_events(items: list[tuple[str, bytes]], cuts: list[int]) -> None:
    stream, expected = _expected(items)
    whole = frames(stream)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    f = StreamFramer()
    split: list[object] = []
    for a, b in itertools.pairwise(points):
        split += f.feed(stream[a:b])
    assert split == whole
    assert whole == expected


@settings(max_examples=300)
@given(st.binary(max_size=3000), st.integers(1, 64))
def test_arbitrary_bytes_only_frame_or_raise_remote_error(data: bytes, step: int) -> None:
    f = StreamFramer(max_message_size=2000, max_header_section=500, max_line_length=100)
    try:
        for i in range(0, len(data), step):
            for event in f.feed(data[i : i + step]):
                if isinstance(event, Frame):
                    assert len(event.data) <= 2000
                    assert event.data[: event.body_start].endswith(b"\r\n\r\n")
    except RemoteProtocolError as exc:
        assert exc.status in (400, 413)


def test_message_size_cannot_exceed_the_hard_limit() -> None:
    from conclave.sip.errors import LocalProtocolError
    from conclave.sip.limits import MAX_MESSAGE_SIZE

    StreamFramer(max_message_size=MAX_MESSAGE_SIZE)
    with pytest.raises(LocalProtocolError):
        StreamFramer(max_message_size=MAX_MESSAGE_SIZE + 1)


def test_header_section_is_bounded_by_a_lower_message_size() -> None:
    # With a 1 KiB message limit, a header section is refused once it passes
    # 1 KiB, not buffered up to the 32 KiB header-section limit.
    f = StreamFramer(max_message_size=1024)
    f.feed(b"OPTIONS sip:x SIP/2.0\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(50):
            f.feed(b"X-Pad: " + b"y" * 20 + b"\r\n")
    assert info.value.status == 413
    assert f.buffered == 0
