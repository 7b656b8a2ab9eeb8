"""Keeps the CNI plugin's kubeconfig token fresh.

``calyx-cni install`` writes ``calyx-kubeconfig`` with a copy of the pod's service-account
token, but projected service-account tokens are short-lived (about an hour; the kubelet
rotates the file well before expiry). A long-running process that mounts the CNI conf dir
(felix) runs :class:`KubeconfigRefresher`: whenever the projected token (or CA) differs from
what the kubeconfig holds, the kubeconfig is rewritten atomically with the new credentials,
the server and everything else kept as they are.

:func:`refreshed_kubeconfig` is the pure decision; :class:`KubeconfigRefresher` does the files.
"""
from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass
from typing import Any, Mapping

from calyx.cni.install import SERVICE_ACCOUNT_DIR, write_atomically
from calyx.logs import get_logger

DEFAULT_INTERVAL_S = 2.0      # two small reads; the kubelet rotates at 80 % of the lifetime

log = get_logger("calyx.cni.token")


class KubeconfigError(Exception):
    """The kubeconfig cannot be refreshed; the message names the file and the field at fault."""


def refreshed_kubeconfig(current: Mapping[str, Any], token: str, ca_data: bytes | None,
                         path: str) -> dict[str, Any] | None:
    """``current`` with every user's token (and every cluster's CA, when given) replaced;
    None when it already holds them."""
    users, clusters = current.get("users"), current.get("clusters")
    if not isinstance(users, list) or not users or not isinstance(clusters, list):
        raise KubeconfigError(f"{path}: users/clusters: not a kubeconfig written by calyx-cni install")
    ca_text = base64.b64encode(ca_data).decode() if ca_data is not None else None
    changed = False
    new_users = []
    for entry in users:
        user = dict(entry.get("user") or {})
        if user.get("token") != token:
            user["token"] = token
            changed = True
        new_users.append({**entry, "user": user})
    new_clusters = []
    for entry in clusters:
        cluster = dict(entry.get("cluster") or {})
        if ca_text is not None and cluster.get("certificate-authority-data") != ca_text:
            cluster["certificate-authority-data"] = ca_text
            changed = True
        new_clusters.append({**entry, "cluster": cluster})
    if not changed:
        return None
    return {**current, "users": new_users, "clusters": new_clusters}


@dataclass(frozen=True)
class KubeconfigRefresher:
    """Rewrites ``kubeconfig`` whenever the service account's token or CA file changes."""

    kubeconfig: str
    service_account_dir: str = SERVICE_ACCOUNT_DIR
    interval: float = DEFAULT_INTERVAL_S

    def refresh_once(self) -> bool:
        """One check; True when the kubeconfig was rewritten."""
        try:
            with open(os.path.join(self.service_account_dir, "token"), encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise KubeconfigError(f"{self.service_account_dir}/token: cannot read: {exc.strerror}") from None
        if not token:
            raise KubeconfigError(f"{self.service_account_dir}/token: empty")
        try:
            with open(os.path.join(self.service_account_dir, "ca.crt"), "rb") as fb:
                ca_data: bytes | None = fb.read()
        except FileNotFoundError:
            ca_data = None
        try:
            with open(self.kubeconfig, encoding="utf-8") as f:
                current = json.load(f)
        except OSError as exc:
            raise KubeconfigError(f"{self.kubeconfig}: cannot read: {exc.strerror}") from None
        except ValueError as exc:
            raise KubeconfigError(f"{self.kubeconfig}: not the JSON calyx-cni install writes: {exc}") from None
        if not isinstance(current, dict):
            raise KubeconfigError(f"{self.kubeconfig}: not a kubeconfig object")
        updated = refreshed_kubeconfig(current, token, ca_data, self.kubeconfig)
        if updated is None:
            return False
        write_atomically(self.kubeconfig, json.dumps(updated, indent=2), 0o600)
        log.info("CNI kubeconfig credentials refreshed", kubeconfig=self.kubeconfig)   # never the token
        return True

    def run(self, stop: threading.Event) -> None:
        """Check every ``interval`` until ``stop`` is set; failures are logged and retried."""
        last_error = ""
        while True:
            try:
                self.refresh_once()
                last_error = ""
            except (KubeconfigError, OSError) as exc:
                if str(exc) != last_error:
                    log.error("CNI kubeconfig not refreshed; will retry", error=str(exc))
                last_error = str(exc)
            if stop.wait(self.interval):
                return
