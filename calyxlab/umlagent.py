"""Control agent that runs inside a user-mode Linux instance, serving the host's requests.

Standard library only (imports are ~10x slower inside UML). It listens on a TCP address of the
UML-side management bridge and serves only the lab's host side: a connection from any other
address is closed unanswered, and each request must carry a MAC made with the lab's key over a
challenge the agent sends first (:mod:`calyxlab.agentauth`); anything else is refused before it
is parsed. Each connection carries one request line and gets one JSON reply line. Operations:

- ``run``: argv, optional input/env/timeout -> returncode, stdout, stderr (base64)
- ``spawn``: argv, env, log path -> pid, start_time (the process is detached)
- ``alive`` / ``terminate``: by pid and start_time
- ``http_get``: netns, host, port, path, timeout -> status (None if unreachable), error
- ``ping``: liveness

Run as ``python -m calyxlab.umlagent --listen ADDRESS:PORT --key-file PATH --allow ADDRESS``;
it prints ``agent ready`` once listening.
"""
from __future__ import annotations

import argparse
import base64
import json
import socketserver
import sys
from pathlib import Path

from calyxlab import agentauth, netnsprobe, procs


def handle(request: dict) -> dict:
    """Carry out one request (pure dispatch onto :mod:`calyxlab.procs`)."""
    op = request.get("op")
    if op == "ping":
        return {"ok": True}
    if op == "run":
        data = request.get("input")
        rc, out, err = procs.run(request["argv"], input=base64.b64decode(data) if data else None,
                                 timeout=request.get("timeout"), env=request.get("env"))
        return {"ok": True, "returncode": rc, "stdout": base64.b64encode(out).decode(),
                "stderr": base64.b64encode(err).decode()}
    if op == "spawn":
        pid, started = procs.spawn(request["argv"], env=request.get("env"),
                                   log=request.get("log"))
        return {"ok": True, "pid": pid, "start_time": started}
    if op == "alive":
        return {"ok": True, "alive": procs.alive(request["pid"], request["start_time"])}
    if op == "terminate":
        was = procs.terminate(request["pid"], request["start_time"],
                              grace=request.get("grace", 5.0))
        return {"ok": True, "was_running": was}
    if op == "http_get":
        status, error = netnsprobe.http_get_status(request["netns"], request["host"],
                                                   int(request["port"]), request["path"],
                                                   float(request.get("timeout", 1.0)))
        return {"ok": True, "status": status, "error": error}
    return {"ok": False, "error": f"unknown op {op!r}"}


class _Handler(socketserver.StreamRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        peer = self.client_address[0]
        if peer not in self.server.allowed:
            print(f"agent: refused a connection from {peer} (only {sorted(self.server.allowed)})",
                  file=sys.stderr, flush=True)
            return
        challenge = agentauth.new_challenge()
        self._reply({"challenge": challenge.hex()})
        try:
            envelope = json.loads(self.rfile.readline())
            text = envelope["request"]
            authentic = isinstance(text, str) and agentauth.verify(self.server.key, challenge,
                                                                   text, envelope.get("mac"))
        except (ValueError, TypeError, KeyError, AttributeError):
            authentic = False
        if not authentic:
            print(f"agent: refused an unauthenticated request from {peer}", file=sys.stderr,
                  flush=True)
            self._reply({"ok": False, "error": "not authenticated"})
            return
        try:
            reply = handle(json.loads(text))
        except Exception as exc:  # a bad request must not stop the agent
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self._reply(reply)

    def _reply(self, message: dict) -> None:
        self.wfile.write(json.dumps(message).encode() + b"\n")
        self.wfile.flush()


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], key: bytes, allowed: frozenset[str]):
        self.key = key
        self.allowed = allowed
        super().__init__(address, _Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calyxlab.umlagent")
    parser.add_argument("--listen", required=True, help="ADDRESS:PORT")
    parser.add_argument("--key-file", required=True, type=Path,
                        help="the lab's key (mode 0600), see calyxlab.agentauth")
    parser.add_argument("--allow", required=True, action="append",
                        help="an address requests may come from (repeatable)")
    args = parser.parse_args(argv)
    try:
        key = agentauth.read_key_file(args.key_file)
    except agentauth.AgentKeyError as exc:
        print(f"agent: not starting: {exc}", file=sys.stderr, flush=True)
        return 2
    host, _, port = args.listen.rpartition(":")
    with _Server((host, int(port)), key, frozenset(args.allow)) as server:
        print("agent ready", flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
