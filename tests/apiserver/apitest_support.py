"""What the API emulator tests share: the fixture CRDs, a server with a client, object builders."""
from __future__ import annotations

from pathlib import Path

from kubernetes import client, config

from calyxlab.apiserver import EmbeddedAPIServer

FIXTURE_CRDS = Path(__file__).parent / "crds"


def start_server(tmp_path: Path, **options) -> tuple[EmbeddedAPIServer, client.ApiClient]:
    server = EmbeddedAPIServer(crd_dir=FIXTURE_CRDS, **options).start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    return server, config.new_client_from_config(str(kubeconfig))


def pod(name: str, node: str | None = "node-1", labels: dict | None = None, **spec) -> dict:
    body: dict = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
                  "spec": {"containers": [{"name": "main", "image": "busybox"}], **spec}}
    if node:
        body["spec"]["nodeName"] = node
    return body


def ippool(name: str, cidr: str = "10.244.0.0/16", **spec) -> dict:
    return {"apiVersion": "calyx.dev/v1", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"cidr": cidr, **spec}}


def raw_request(base_url: str, method: str, path: str, body: object = None,
                content_type: str = "application/json") -> tuple[int, dict]:
    """One plain HTTP request, for what the typed client refuses to send (unknown fields, bad bodies)."""
    import json
    import urllib.error
    import urllib.request
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base_url + path, method=method, data=data,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
