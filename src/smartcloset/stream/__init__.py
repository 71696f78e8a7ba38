"""Getting frames in and out: the wire protocol, newest-frame slots and the WebSocket transport."""
