"""The emulator as a process: `ready <url>`, several listeners, kubeconfig output, health, SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from kubernetes import client, config

from apitest_support import FIXTURE_CRDS


def test_process_serves_until_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    proc = subprocess.Popen([sys.executable, "-m", "calyxlab.apiserver", "--listen", "127.0.0.1:0",
                             "--listen", "127.0.0.1:0", "--crd-dir", str(FIXTURE_CRDS), "--kubeconfig-out",
                             str(kubeconfig), "--bookmark-interval", "1", "--history", "50"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("ready http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        url = line.split(" ", 1)[1]
        for path in ("/livez", "/readyz", "/healthz"):
            with urllib.request.urlopen(url + path, timeout=10) as resp:
                assert resp.status == 200 and resp.read() == b"ok"
        with urllib.request.urlopen(url + "/apis/calyx.dev/v1", timeout=10) as resp:
            resources = json.load(resp)["resources"]
        assert {r["name"] for r in resources} == {"ippools", "ippools/status"}
        api = config.new_client_from_config(str(kubeconfig))
        assert api.configuration.host == url
        assert client.CoreV1Api(api).read_namespace("default").status.phase == "Active"
        api.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "calyxlab.apiserver", "--listen", "nowhere"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--listen 'nowhere': expected HOST:PORT" in result.stderr
    bad_crd = tmp_path / "crds"
    bad_crd.mkdir()
    (bad_crd / "x.yaml").write_text("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
                                    "metadata: {name: things.example.com}\nspec: {group: example.com, "
                                    "scope: Galaxy, names: {plural: things, kind: Thing}, versions: [{name: v1}]}\n")
    result = subprocess.run([sys.executable, "-m", "calyxlab.apiserver", "--listen", "127.0.0.1:0",
                             "--crd-dir", str(bad_crd)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "things.example.com" in result.stderr and "spec.scope" in result.stderr and "Galaxy" in result.stderr
