"""Media: aiortc peers and per-session forwarding. Knows nothing of HTTP or JWT.

Signaling drives a `MediaNode`; the recorder subscribes through
`MediaSubscriptions.add_sink` and sees an `InternalSubscription`.
"""

from .aiortc_internals import restrict_host_addresses
from .codecs import Codec
from .errors import MediaError
from .events import LayerCallback, LayerEvent, PublishedLayers, ReceivedLayers
from .inbound import REPAIR_WINDOW_S
from .node import MediaNode
from .subscription import InternalSubscription, MediaSubscriptions, PacketCallback, SenderClock
from .udp_mux import PortUnavailable

__all__ = [
    "REPAIR_WINDOW_S",
    "Codec",
    "InternalSubscription",
    "LayerCallback",
    "LayerEvent",
    "MediaError",
    "MediaNode",
    "MediaSubscriptions",
    "PacketCallback",
    "PortUnavailable",
    "PublishedLayers",
    "ReceivedLayers",
    "SenderClock",
    "restrict_host_addresses",
]
