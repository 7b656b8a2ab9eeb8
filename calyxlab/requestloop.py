"""A client for Service traffic in the lab: HTTP GETs to one URL, each on a new connection,
one output line per request — ``ok POD CLIENT_IP`` (the :mod:`calyxlab.echoserver` answer) or
``fail REASON`` — so the requests' fate can be followed while it runs and counted after.

``python -m calyxlab.requestloop --url http://10.96.0.10/ [--count N | --stop FILE]
[--interval S] [--timeout S]``; run in the client's node (the office laptop).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """One request: the pod that answered and the client address it saw, or why it failed."""

    ok: bool
    pod: str = ""
    client_ip: str = ""
    reason: str = ""


def parse(output: str) -> list[Outcome]:
    """The outcomes in a request loop's output (pure); an unfinished last line is ignored."""
    outcomes = []
    for line in output.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[0] == "ok":
            outcomes.append(Outcome(True, parts[1], parts[2]))
        elif parts and parts[0] == "fail":
            outcomes.append(Outcome(False, reason=line[5:]))
    return outcomes


def request(url: str, timeout: float) -> str:
    """One GET on a fresh connection; its output line."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read().decode(errors="replace").split()
        return f"ok {body[0]} {body[1]}" if len(body) == 2 else f"fail bad answer {body!r}"
    except Exception as exc:   # every failure is an outcome to count, not a crash
        return f"fail {type(exc).__name__}: {exc}".replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calyxlab.requestloop", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, default=0, help="stop after N requests (0: until --stop)")
    parser.add_argument("--stop", help="stop once this file exists")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between request starts")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds per request")
    args = parser.parse_args(argv)
    if not args.count and not args.stop:
        parser.error("give --count or --stop")
    sent = 0
    while not (args.count and sent >= args.count) and not (args.stop and os.path.exists(args.stop)):
        started = time.monotonic()
        print(request(args.url, args.timeout), flush=True)
        sent += 1
        time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
