"""The self-contained plugin: built with PyInstaller as the node image builds it, installed with
``calyx-cni install --plugin-dir`` and run by its installed path with an empty environment and
no virtualenv on PATH, as a container runtime on a host without our Python would run it."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import calyx
from calyx.cni import bundle, install
from cnitest_support import Namespaces

pytestmark = pytest.mark.lab

HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CACHE_ROOT = Path(tempfile.gettempdir()) / "calyx-cni-bundle-cache"


def _sources_digest() -> str:
    """Bundles are cached per content of the calyx package and the PyInstaller version."""
    import PyInstaller
    digest = hashlib.sha256(PyInstaller.__version__.encode() + sys.version.encode())
    root = Path(calyx.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def plugin_bundle() -> Path:
    """The one-dir bundle of the current sources (built once, then reused from the cache)."""
    CACHE_ROOT.mkdir(exist_ok=True)
    done = CACHE_ROOT / _sources_digest()
    with open(CACHE_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # concurrent sessions build it once
        if not (done / bundle.BUNDLE_NAME / bundle.BUNDLE_NAME).exists():
            work = Path(tempfile.mkdtemp(prefix=".build.", dir=CACHE_ROOT))
            try:
                started = time.monotonic()
                bundle.build(work / "dist", work / "build")
                print(f"\nplugin bundle built in {time.monotonic() - started:.0f} s")
                shutil.rmtree(done, ignore_errors=True)
                os.rename(work / "dist", done)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return done / bundle.BUNDLE_NAME


def _run_installed(cluster, exe: Path, env: dict[str, str], conf: dict | None) -> subprocess.CompletedProcess:
    argv = ["env", "-i", *(f"{k}={v}" for k, v in {"PATH": HOST_PATH, **env}.items()), str(exe)]
    return subprocess.run(["ip", "netns", "exec", cluster.node_ns, *argv], input=json.dumps(conf) if conf else "",
                          capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(900)
def test_installed_bundle_serves_version_add_check_del_without_our_python(cluster, plugin_bundle, tmp_path):
    bin_dir, conf_dir = tmp_path / "opt-cni-bin", tmp_path / "etc-cni-net.d"
    run = subprocess.run([sys.executable, "-m", "calyx.cni.plugin", "install", "--plugin-dir", str(plugin_bundle),
                          "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir), "--nodename", cluster.node,
                          "--kubeconfig", cluster.kubeconfig, "--run-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    exe = bin_dir / "calyx"
    assert exe.is_symlink() and os.readlink(exe).startswith("calyx.d/")
    assert (exe.resolve().parent / "_internal").is_dir()
    # Installing the same bundle again is a no-op for the files: one version kept.
    again = subprocess.run([sys.executable, "-m", "calyx.cni.plugin", "install", "--plugin-dir", str(plugin_bundle),
                            "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir), "--nodename", cluster.node,
                            "--kubeconfig", cluster.kubeconfig], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert [p.name for p in (bin_dir / "calyx.d").iterdir()] == [exe.resolve().parent.name]

    conflist = json.loads((conf_dir / install.CONFLIST_NAME).read_text())
    conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **conflist["plugins"][0]}
    cluster.create_pool("pool-b", "10.96.0.0/24", block_size=28)

    version = _run_installed(cluster, exe, {"CNI_COMMAND": "VERSION"}, None)
    assert version.returncode == 0, version.stderr
    assert "1.0.0" in json.loads(version.stdout)["supportedVersions"]

    pod_ns = cluster.namespaces.add("bundle")
    cni = {"CNI_CONTAINERID": "bundle-1", "CNI_NETNS": Namespaces.path(pod_ns), "CNI_IFNAME": "eth0",
           "CNI_PATH": str(bin_dir), "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=bundled"}
    add = _run_installed(cluster, exe, {**cni, "CNI_COMMAND": "ADD"}, conf)      # claims a block: the API path
    assert add.returncode == 0, add.stdout + add.stderr
    result = json.loads(add.stdout)
    assert result["ips"][0]["address"] == "10.96.0.1/32"
    assert [b["spec"]["cidr"] for b in cluster.blocks()] == ["10.96.0.0/28"]

    check = _run_installed(cluster, exe, {**cni, "CNI_COMMAND": "CHECK"}, {**conf, "prevResult": result})
    assert check.returncode == 0, check.stdout + check.stderr
    delete = _run_installed(cluster, exe, {**cni, "CNI_COMMAND": "DEL"}, conf)
    assert delete.returncode == 0, delete.stdout + delete.stderr
    gone = _run_installed(cluster, exe, {**cni, "CNI_COMMAND": "CHECK"}, {**conf, "prevResult": result})
    assert gone.returncode == 1 and json.loads(gone.stdout)["code"] == 103


def test_install_refuses_a_directory_that_is_not_a_bundle(tmp_path):
    (tmp_path / "not-a-bundle").mkdir()
    with pytest.raises(install.InstallError, match="no executable 'calyx' in it"):
        install.install_bundle(tmp_path / "not-a-bundle", tmp_path / "bin")


def test_install_switches_bundles_atomically_and_keeps_the_previous_one(tmp_path):
    def fake_bundle(name: str, text: str) -> Path:
        root = tmp_path / name
        (root / "_internal").mkdir(parents=True)
        exe = root / "calyx"
        exe.write_text(f"#!/bin/sh\necho {text}\n")
        exe.chmod(0o755)
        return root

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "calyx").write_text("#!/bin/sh\necho wrapper\n")          # an earlier wrapper script
    outputs = []
    for name in ("v1", "v2", "v3"):
        entry = install.install_bundle(fake_bundle(name, name), bin_dir)
        outputs.append(subprocess.run([str(entry)], capture_output=True, text=True).stdout.strip())
    assert outputs == ["v1", "v2", "v3"]
    assert len(list((bin_dir / "calyx.d").iterdir())) == 2              # v3 and the v2 it replaced
    assert not [p for p in bin_dir.iterdir() if p.name.startswith(".")]
