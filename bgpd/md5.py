"""Why an MD5-protected session does not come up, read from the kernel's TcpExt counters.

I/O (reads ``/proc/PID/net/netstat`` of ExaBGP's network namespace). A wrong or missing TCP MD5
key leaves no trace in BGP: the kernel drops the segments. Its counters do: TCPMD5Failure and
TCPMD5NotFound grow when a peer's segments carry no or the wrong signature for a configured
key, TCPMD5Unexpected when a peer signs segments and no key is configured here. A
:class:`Md5Diagnosis` turns their growth since the previous reading into a hint per session.
"""
from __future__ import annotations

from pathlib import Path

MD5_COUNTERS = ("TCPMD5NotFound", "TCPMD5Unexpected", "TCPMD5Failure")
MISMATCH_HINT = ("TCP MD5 authentication failed: the kernel dropped segments without the right key "
                 "(TCPMD5Failure/NotFound); check the BGP password")
UNEXPECTED_HINT = "TCP MD5 signature from the peer but no password is configured here (TCPMD5Unexpected)"


def read_md5_counters(pid: int | None) -> dict[str, int]:
    """TcpExt MD5 counters of the network namespace of process ``pid`` (or our own)."""
    path = f"/proc/{pid}/net/netstat" if pid else "/proc/self/net/netstat"
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return {}
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return {k: int(table.get(k, 0)) for k in MD5_COUNTERS}
    return {}


class Md5Diagnosis:
    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self.mismatch = 0       # growth since the previous reading
        self.unexpected = 0

    def observe(self, counters: dict[str, int]) -> None:
        if not counters:
            self.mismatch = self.unexpected = 0
            return
        delta = {k: counters[k] - self._last.get(k, counters[k]) for k in counters}
        self._last = counters
        self.mismatch = delta.get("TCPMD5Failure", 0) + delta.get("TCPMD5NotFound", 0)
        self.unexpected = delta.get("TCPMD5Unexpected", 0)

    def hint(self, password_configured: bool) -> str | None:
        """The hint for a session that is not up, or None when the counters say nothing."""
        if password_configured and self.mismatch:
            return MISMATCH_HINT
        if not password_configured and self.unexpected:
            return UNEXPECTED_HINT
        return None
