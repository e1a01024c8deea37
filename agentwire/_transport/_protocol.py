"""gRPC's use of HTTP/2: error codes, header decoding, and h2 set up the way gRPC needs it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import h2.config
import h2.connection
import h2.settings
from grpclib.const import Status

#: our SETTINGS_INITIAL_WINDOW_SIZE (per stream) and our connection window
STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
#: the most bytes of a stream's bulk messages sent and not yet acknowledged by the peer
#: (on the wire, in socket buffers, unread): what an urgent message may find ahead of it
#: (see ``Http2Connection.set_bulk_tag``)
BULK_IN_FLIGHT = 256 * 1024

# HTTP/2 error codes used here (RFC 9113 section 7)
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
REFUSED_STREAM = 0x7
CANCEL = 0x8
ENHANCE_YOUR_CALM = 0xB

# gRPC's mapping of RST_STREAM codes to statuses (doc/PROTOCOL-HTTP2.md)
_RESET_STATUS = {
    REFUSED_STREAM: Status.UNAVAILABLE,
    CANCEL: Status.CANCELLED,
    ENHANCE_YOUR_CALM: Status.RESOURCE_EXHAUSTED,
    0xC: Status.PERMISSION_DENIED,
}

OPEN_STATES = (
    h2.connection.ConnectionState.CLIENT_OPEN,
    h2.connection.ConnectionState.SERVER_OPEN,
)

Headers = list[tuple[str, str]]


def reset_status(error_code: int) -> Status:
    """The gRPC status a client reports for a stream reset with ``error_code``."""
    return _RESET_STATUS.get(error_code, Status.INTERNAL)


def decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    return [
        (name.decode("utf-8", "replace"), value.decode("utf-8", "replace")) for name, value in raw
    ]


class GracefulH2Connection(h2.connection.H2Connection):
    """h2 with graceful GOAWAY: streams up to ``last_stream_id`` may finish.

    Stock h2 treats any GOAWAY as the end of the connection and rejects every
    later frame, which breaks the graceful shutdown gRPC servers (grpc-core,
    ours) perform. After a GOAWAY with NO_ERROR the state machine is put back
    to open; the transport itself refuses new streams. (This overrides an h2
    4.x method; the ``h2<5`` dependency pins it.)
    """

    def _receive_goaway_frame(self, frame: Any) -> Any:
        previous = self.state_machine.state
        result = super()._receive_goaway_frame(frame)
        if frame.error_code == NO_ERROR and previous in OPEN_STATES:
            self.state_machine.state = previous
        return result

    def send_graceful_goaway(self, last_stream_id: int) -> None:
        previous = self.state_machine.state
        self.close_connection(error_code=NO_ERROR, last_stream_id=last_stream_id)
        if previous in OPEN_STATES:
            self.state_machine.state = previous


def open_h2(*, client_side: bool, max_concurrent_streams: int | None) -> GracefulH2Connection:
    """A new h2 state machine with our settings, its preface already queued."""
    config = h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    conn = GracefulH2Connection(config=config)
    settings: dict[h2.settings.SettingCodes, int] = {
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        h2.settings.SettingCodes.ENABLE_PUSH: 0,
        h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
    }
    if max_concurrent_streams is not None:
        settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = max_concurrent_streams
    conn.local_settings = h2.settings.Settings(client=client_side, initial_values=settings)
    conn.initiate_connection()
    conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
    return conn
