"""The incident console: read-only web pages on the admin port (``/console``).

:func:`console_router` serves the pages (:mod:`.pages`); :class:`TrafficWatch` is the relay
pipeline step that counts mail relayed to refusing recipients, the evidence of a problem gone
quiet (:mod:`.watch`).
"""

from gateway.console.pages import console_router
from gateway.console.watch import TrafficWatch

__all__ = ["TrafficWatch", "console_router"]
