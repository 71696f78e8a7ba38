"""Property tests of the wire protocol (stream/protocol.py): whatever arrives, the parsers either
return a message that obeys every documented rule or raise ProtocolError with a known code -
never another exception, which would reach the session as a crash instead of an error reply.

test_protocol.py holds the hand-picked cases and two small fuzzers; these go wider: frames built
around a valid header with every field mutated, recursive JSON, huge arrays, deep nesting, text
decoded from arbitrary bytes (lone surrogates), and round trips.
"""

from __future__ import annotations

import json
import math
import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smartcloset.stream.protocol import (
    FRAME_HEADER,
    MAGIC,
    MAX_CONTROL_BYTES,
    MAX_GARMENTS_SELECTED,
    POSE_SOURCES,
    REPLY_HEADER,
    TYPE_FRAME,
    VERSION,
    ClientFrame,
    Ping,
    ProtocolError,
    ReplyHeader,
    SelectGarments,
    Settings,
    pack_frame,
    pack_reply,
    parse_control,
    parse_frame,
    parse_reply,
)

FRAME_CODES = {"bad_header", "bad_version", "bad_type", "empty_frame"}
CONTROL_CODES = {"control_too_large", "bad_json", "bad_control", "unknown_type"}
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u32 = st.integers(0, 2**32 - 1)
any_float = st.floats(allow_nan=True, allow_infinity=True)


# -- binary frames ----------------------------------------------------------------------------


def check_frame(data: bytes) -> ClientFrame | None:
    """The property: a valid frame that matches its bytes, or a ProtocolError with a known code."""
    try:
        f = parse_frame(data, 5.0)
    except ProtocolError as exc:
        assert exc.code in FRAME_CODES and str(exc)
        return None
    magic, version, mtype, fid, cap = FRAME_HEADER.unpack_from(data)
    assert (magic, version, mtype) == (MAGIC, VERSION, TYPE_FRAME)
    assert f.frame_id == fid and f.capture_ms == cap and math.isfinite(f.capture_ms)
    assert f.jpeg == data[FRAME_HEADER.size :] and f.jpeg and f.received_ms == 5.0
    return f


@FAST
@given(st.binary(max_size=256))
def test_parse_frame_on_random_bytes(data):
    check_frame(data)


@FAST
@given(
    magic=st.sampled_from([MAGIC, b"SX", b"\x00\x00", b"CS"]),
    version=st.integers(0, 255),
    mtype=st.integers(0, 255),
    fid=u32,
    cap=any_float,
    payload=st.binary(max_size=64),
    cut=st.none() | st.integers(0, 40),
)
@example(magic=MAGIC, version=VERSION, mtype=TYPE_FRAME, fid=1, cap=math.nan, payload=b"x", cut=None)
@example(magic=MAGIC, version=VERSION + 1, mtype=TYPE_FRAME, fid=1, cap=0.0, payload=b"x", cut=None)
@example(magic=MAGIC, version=VERSION, mtype=TYPE_FRAME, fid=1, cap=0.0, payload=b"x", cut=15)
def test_parse_frame_on_mutated_headers(magic, version, mtype, fid, cap, payload, cut):
    data = FRAME_HEADER.pack(magic, version, mtype, fid, cap) + payload
    if cut is not None:
        data = data[:cut]  # truncated anywhere, header included
    f = check_frame(data)
    valid = magic == MAGIC and version == VERSION and mtype == TYPE_FRAME and math.isfinite(cap) and payload
    assert (f is not None) == bool(valid and (cut is None or cut > FRAME_HEADER.size))


@FAST
@given(
    fid=st.integers(-(2**40), 2**40),
    cap=st.floats(allow_nan=False, allow_infinity=False),
    jpeg=st.binary(min_size=1, max_size=64),
)
def test_frame_round_trip(fid, cap, jpeg):
    f = parse_frame(pack_frame(fid, cap, jpeg))
    assert (f.frame_id, f.capture_ms, f.jpeg) == (fid & 0xFFFFFFFF, cap, jpeg)


# -- replies ----------------------------------------------------------------------------------

replies = st.builds(
    ReplyHeader,
    frame_id=u32,
    capture_ms=any_float,
    received_ms=any_float,
    pose_ms=any_float,
    sent_ms=any_float,
    pose_source=st.sampled_from(POSE_SOURCES),
    persons=st.integers(0, 1000),
)


SOURCE_AT = REPLY_HEADER.size - 4  # the pose-source byte: before persons (B) and reserved (H)


def same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@FAST
@given(replies, st.binary(max_size=64))
def test_reply_round_trip(head, jpeg):
    got, body = parse_reply(pack_reply(head, jpeg))
    assert body == jpeg and got.frame_id == head.frame_id and got.pose_source == head.pose_source
    assert got.persons == min(head.persons, 255)
    for name in ("capture_ms", "received_ms", "pose_ms", "sent_ms"):
        assert same_float(getattr(got, name), getattr(head, name))


@FAST
@given(st.binary(max_size=REPLY_HEADER.size + 16) | replies.map(lambda h: pack_reply(h, b"j")).map(bytearray))
def test_parse_reply_on_random_or_mutated_bytes(data):
    data = bytes(data)
    if len(data) > SOURCE_AT:  # set the pose-source byte to 0..7: an unknown source must be refused
        data = data[:SOURCE_AT] + bytes([data[0] % 8]) + data[SOURCE_AT + 1 :]
    try:
        head, _ = parse_reply(data)
    except ProtocolError as exc:
        assert exc.code == "bad_header"
        return
    assert head.pose_source in POSE_SOURCES and 0 <= head.persons <= 255


# -- control messages -------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6),
    max_leaves=30,
)
KEYS = ["garments", "jpeg_quality", "draw_skeleton", "pose_wait_ms", "t", "evil"]
TYPES = ["select", "settings", "ping", "pong", "hello", "", "SELECT"]
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | json_values}, optional={k: json_values for k in KEYS}
)
plausible = st.fixed_dictionaries(
    {"type": st.sampled_from(["select", "settings", "ping"])},
    optional={
        "garments": st.lists(st.text(max_size=70), max_size=10),
        "jpeg_quality": st.integers(0, 120) | st.floats(0, 120),
        "pose_wait_ms": st.floats(-10, 300) | st.just(math.nan),
        "draw_skeleton": st.booleans() | st.integers(0, 1),
        "t": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**400), 10**400),
    },
)


def check_control(text: str) -> None:
    """The property: a message within every documented rule, or a ProtocolError with a known code."""
    try:
        msg = parse_control(text)
    except ProtocolError as exc:
        assert exc.code in CONTROL_CODES and str(exc)
        return
    assert len(text.encode("utf-8", "surrogatepass")) <= MAX_CONTROL_BYTES
    if isinstance(msg, SelectGarments):
        g = msg.garments
        assert len(g) <= MAX_GARMENTS_SELECTED and len(set(g)) == len(g)
        assert all(isinstance(i, str) and 0 < len(i) <= 64 for i in g)
    elif isinstance(msg, Settings):
        assert msg.jpeg_quality is None or (type(msg.jpeg_quality) is int and 30 <= msg.jpeg_quality <= 100)
        assert msg.pose_wait_ms is None or 0.0 <= msg.pose_wait_ms <= 200.0
        assert msg.draw_skeleton in (None, True, False)
    else:
        assert isinstance(msg, Ping) and type(msg.t) is float and math.isfinite(msg.t)


@FAST
@given(st.one_of(messages, plausible, json_values))
def test_parse_control_on_recursive_json(obj):
    check_control(json.dumps(obj))


@FAST
@given(st.text(max_size=300))
def test_parse_control_on_random_text(text):
    check_control(text)


@FAST
@given(st.binary(max_size=300))
def test_parse_control_on_text_decoded_from_arbitrary_bytes(data):
    # A str can carry lone surrogates (from a lenient decoder): they must not crash the size check.
    check_control(data.decode("utf-8", "surrogateescape"))
    check_control('{"type":"' + data.decode("latin-1") + '"}')


@settings(max_examples=25, deadline=None)
@given(
    n=st.sampled_from([10, 1000, 3000, 200_000]),
    depth=st.integers(1, 100_000),
    item=st.sampled_from(['"a"', "1", "[]", "{}", "null"]),
)
def test_parse_control_on_huge_arrays_and_deep_nesting(n, depth, item):
    check_control('{"type":"select","garments":[' + ",".join([item] * n) + "]}")
    check_control("[" * depth + "]" * depth)
    check_control('{"type":"ping","t":' + "[" * depth + "1" + "]" * depth + "}")
    check_control('{"type":"ping","t":' + "9" * min(n, 16000) + "}")  # ints past float and past 4300 digits


def test_huge_numbers_are_refused_not_crashed():
    # Found by these fuzzers: both escaped parse_control as OverflowError / ValueError.
    for text in ('{"type":"ping","t":' + "9" * 400 + "}", '{"type":"ping","t":' + "9" * 5000 + "}"):
        try:
            parse_control(text)
        except ProtocolError as exc:
            assert exc.code in ("bad_control", "bad_json")
        else:
            raise AssertionError("accepted")


def test_header_layout_is_what_the_fuzzers_assume():
    assert FRAME_HEADER.size == 16 and REPLY_HEADER.size == 44
    assert struct.unpack_from("<B", pack_reply(ReplyHeader(1, 0, 0, 0, 0, "held"), b""), SOURCE_AT)[0] == 4
