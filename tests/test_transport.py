"""The WebSocket layer's own pieces: the NumPy masker that takes wsproto's place."""

import os

import wsproto.frame_protocol
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from smartcloset.stream.transport import WSPROTO_XOR_MASKER, NumpyXorMasker


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(min_size=4, max_size=4),
    data=st.binary(max_size=2000),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
)
def test_numpy_masker_matches_wsprotos_over_any_split(key, data, cuts):
    """A message may reach the masker in pieces of any length: the key must turn as wsproto's does."""
    ours, theirs = NumpyXorMasker(key), WSPROTO_XOR_MASKER(key)
    edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for a, b in zip(edges, edges[1:]):
        assert ours.process(data[a:b]) == theirs.process(data[a:b])
    assert ours.process(b"") == bytearray()


def test_wsproto_masks_and_unmasks_with_it_end_to_end():
    assert wsproto.frame_protocol.XorMaskerSimple is NumpyXorMasker  # installed on import
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="mirror", target="/ws")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    payload = os.urandom(37_851)  # a frame's size, not a multiple of 4
    wire = client.send(BytesMessage(data=payload))
    assert payload not in wire  # masked on the way
    got = bytearray()
    for a in range(0, len(wire), 4_097):  # the socket hands it over in pieces
        server.receive_data(wire[a : a + 4_097])
        for event in server.events():
            got += event.data
    assert bytes(got) == payload
