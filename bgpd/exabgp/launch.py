"""The program bgpd runs as ExaBGP: ExaBGP's own entry point with one adjustment, so that a
session bgpd tears down for a reason (``neighbor <ip> teardown <cease subcode>``, e.g. 1:
maximum number of prefixes reached) ends with that Cease NOTIFICATION.

ExaBGP 5.0 closes a session on which it announced graceful restart without any
NOTIFICATION, whatever the teardown's reason: right for its own restarts and reloads (the peer
keeps the routes while we come back), wrong for an intentional teardown, where the peer must
learn why the session ended and drop the routes (RFC 4486; RFC 4724 helpers act on a TCP
failure, not on a Cease). ExaBGP only calls ``Peer.teardown`` for the API command (its reloads
and stops set the teardown code directly), so the adjustment wraps that method: for any
subcode other than 3 (what ExaBGP uses for its own resets) the torn-down neighbor stops
counting graceful restart as configured, and ExaBGP's normal path sends ``Notify(6, code)``.
bgpd removes that neighbor from the configuration right after (max-prefix hold-down); when it
comes back it is a fresh neighbor with graceful restart as configured.

ExaBGP would also reconnect that neighbor at once: the teardown resets its back-off, and the
session came up again milliseconds later (the peer sending its whole table once more) before
bgpd's reload, triggered by the session going down, removed the neighbor. So the torn-down
neighbor's next attempt waits ``RECONNECT_HOLD_OFF`` seconds, by far long enough for that
reload (a reload that keeps the neighbor resets the back-off, as ExaBGP always does).

I/O: runs ExaBGP in this process (``python -m bgpd.exabgp.launch CONFIG``).
"""
from __future__ import annotations

import sys
from typing import Any, Callable

ADMINISTRATIVE_RESET = 3      # ExaBGP's own code for reload/stop teardowns: keep them silent
RECONNECT_HOLD_OFF = 5        # seconds before ExaBGP may reconnect a neighbor bgpd tore down


def cease_with_notification(teardown: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``Peer.teardown`` so an explicit Cease subcode is always notified to the peer."""
    def notified_teardown(self: Any, code: int, restart: bool = True) -> Any:
        if code == ADMINISTRATIVE_RESET:
            return teardown(self, code, restart)
        capability = dict(self.neighbor["capability"])
        capability["graceful-restart"] = False
        self.neighbor["capability"] = capability
        result = teardown(self, code, restart)     # resets the back-off: the next try would be now
        # The session's close (Delay.increase) turns this into the wait before the next attempt.
        self._delay._next = RECONNECT_HOLD_OFF
        return result
    notified_teardown.__wrapped__ = teardown    # type: ignore[attr-defined]
    return notified_teardown


def main(argv: list[str]) -> int:
    from exabgp.application.main import main as exabgp_main
    from exabgp.reactor.peer import Peer
    if not hasattr(Peer.teardown, "__wrapped__"):
        Peer.teardown = cease_with_notification(Peer.teardown)
    sys.argv = ["exabgp", *argv]
    return exabgp_main() or 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
