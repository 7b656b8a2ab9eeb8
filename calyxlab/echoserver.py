"""A workload for Service traffic in the lab: an HTTP server that answers every GET with its
pod's name and the client address it sees (``NAME CLIENT_IP``), so a test knows which pod
served a request and whether the client's source address survived the way there.

Run inside a pod's network namespace: ``python -m calyxlab.echoserver --name web-1 --port 8080``.
"""
from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def reply(pod: str, client_ip: str) -> bytes:
    """The body of every answer (pure)."""
    return f"{pod} {client_ip}\n".encode()


def handler(pod: str) -> type[BaseHTTPRequestHandler]:
    class Echo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:   # noqa: N802 (the http.server interface)
            body = reply(pod, self.client_address[0])
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
    return Echo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calyxlab.echoserver", description=__doc__)
    parser.add_argument("--name", required=True, help="the pod's name, echoed in every answer")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("0.0.0.0", args.port), handler(args.name))
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
