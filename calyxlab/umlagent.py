"""Control agent that runs inside a user-mode Linux instance, serving the host's requests.

Standard library only (imports are ~10x slower inside UML). It listens on a TCP address of the
UML-side management bridge; each connection carries one JSON request line and gets one JSON
reply line. Operations:

- ``run``: argv, optional input/env/timeout -> returncode, stdout, stderr (base64)
- ``spawn``: argv, env, log path -> pid, start_time (the process is detached)
- ``alive`` / ``terminate``: by pid and start_time
- ``http_get``: netns, host, port, path, timeout -> status (None if unreachable), error
- ``ping``: liveness

Run as ``python -m calyxlab.umlagent --listen ADDRESS:PORT``; it prints ``agent ready`` once
listening.
"""
from __future__ import annotations

import argparse
import base64
import json
import socketserver
import sys

from calyxlab import netnsprobe, procs


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
    def handle(self) -> None:
        line = self.rfile.readline()
        try:
            reply = handle(json.loads(line))
        except Exception as exc:  # a bad request must not stop the agent
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calyxlab.umlagent")
    parser.add_argument("--listen", required=True, help="ADDRESS:PORT")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    with _Server((host, int(port)), _Handler) as server:
        print("agent ready", flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
