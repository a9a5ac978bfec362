"""Media: aiortc peers and per-session forwarding. Knows nothing of HTTP or JWT."""

from .aiortc_internals import restrict_host_addresses
from .router import MediaError, MediaNode

__all__ = ["MediaError", "MediaNode", "restrict_host_addresses"]
