import json
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartcloset.stream.protocol import (
    FRAME_HEADER,
    MAX_CONTROL_BYTES,
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


def test_frame_round_trip():
    data = pack_frame(42, 1234.5, b"\xff\xd8\xffjpeg")
    f = parse_frame(data, received_ms=99.0)
    fields = (f.frame_id, f.capture_ms, f.jpeg, f.received_ms)
    assert fields == (42, 1234.5, b"\xff\xd8\xffjpeg", 99.0)
    assert len(data) == FRAME_HEADER.size + 7 == 16 + 7


def test_reply_round_trip():
    h = ReplyHeader(7, 10.0, 20.0, math.nan, 30.0, "extrapolated", 1)
    head, jpeg = parse_reply(pack_reply(h, b"abc"))
    assert jpeg == b"abc"
    assert (head.frame_id, head.capture_ms, head.received_ms, head.sent_ms) == (7, 10.0, 20.0, 30.0)
    assert math.isnan(head.pose_ms) and head.pose_source == "extrapolated" and head.persons == 1


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", "bad_header"),
        (b"SC\x01\x01", "bad_header"),
        (b"XX" + pack_frame(1, 0.0, b"j")[2:], "bad_header"),
        (b"SC\x02" + pack_frame(1, 0.0, b"j")[3:], "bad_version"),
        (b"SC\x01\x09" + pack_frame(1, 0.0, b"j")[4:], "bad_type"),
        (pack_frame(1, 0.0, b""), "empty_frame"),
        (struct.pack("<2sBBId", b"SC", 1, 1, 1, math.inf) + b"j", "bad_header"),
    ],
)
def test_bad_frames_are_refused_with_a_code(data, code):
    with pytest.raises(ProtocolError) as err:
        parse_frame(data)
    assert err.value.code == code


def test_control_messages():
    assert parse_control('{"type":"select","garments":["a","b","a"]}') == SelectGarments(["a", "b"])
    assert parse_control('{"type":"settings","jpeg_quality":70}') == Settings(jpeg_quality=70)
    assert parse_control('{"type":"settings","draw_skeleton":true}').draw_skeleton is True
    assert parse_control('{"type":"ping","t":5}') == Ping(5.0)


@pytest.mark.parametrize(
    "text, code",
    [
        ("not json", "bad_json"),
        ("[1,2]", "bad_control"),
        ('{"type": 3}', "bad_control"),
        ('{"type":"dance"}', "unknown_type"),
        ('{"type":"select","garments":"tshirt"}', "bad_control"),
        ('{"type":"select","garments":[1]}', "bad_control"),
        ('{"type":"select","garments":["' + "x" * 65 + '"]}', "bad_control"),
        ('{"type":"select","garments":' + json.dumps([f"g{i}" for i in range(20)]) + "}", "bad_control"),
        ('{"type":"settings","jpeg_quality":500}', "bad_control"),
        ('{"type":"settings","jpeg_quality":true}', "bad_control"),
        ('{"type":"settings","pose_wait_ms":NaN}', "bad_control"),
        ('{"type":"settings","draw_skeleton":1}', "bad_control"),
        ('{"type":"settings","evil":1}', "bad_control"),
        ('{"type":"ping","t":"x"}', "bad_control"),
        ('{"type":"select","garments":[' + ",".join(['"a"'] * 200000) + "]}", "control_too_large"),
        ("[" * 5000 + "]" * 5000, "bad_json"),
    ],
)
def test_bad_control_messages(text, code):
    with pytest.raises(ProtocolError) as err:
        parse_control(text)
    assert err.value.code == code


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_parse_frame_never_crashes(data):
    try:
        f = parse_frame(data)
    except ProtocolError:
        return
    assert f.jpeg and len(data) > FRAME_HEADER.size


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=200)
    | st.builds(
        json.dumps,
        st.dictionaries(
            st.sampled_from(["type", "garments", "t", "jpeg_quality"]),
            st.none() | st.integers() | st.text(max_size=5) | st.lists(st.text(max_size=3), max_size=3),
        ),
    )
)
def test_parse_control_only_raises_protocol_errors(text):
    try:
        parse_control(text)
    except ProtocolError as exc:
        assert exc.code and str(exc)


def test_control_size_limit_is_bytes_not_characters():
    text = '{"type":"ping","t":1,"x":"' + "é" * (MAX_CONTROL_BYTES // 2) + '"}'
    with pytest.raises(ProtocolError) as err:
        parse_control(text)
    assert err.value.code == "control_too_large"
