"""A pod's volumes made real on the lab node, as kubelet's volume manager does.

``hostPath`` resolves to the node's own directory (:func:`calyxlab.nodeview.host_path`);
``emptyDir``, ``secret`` and ``projected`` volumes are directories under the pod's directory,
filled from the API with the node's identity: Secrets and ConfigMaps the pod refers to (the
Node authorizer allows exactly those), and ServiceAccount tokens through the TokenRequest API,
bound to the pod and renewed at 80 % of their lifetime. Files are replaced by rename, so a
process reading one sees the old or the new content, never half of it.
"""
from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from calyxlab.kubelet.podspec import (ConfigMapProjection, EmptyDirVolume, FieldProjection,
                                      HostPathVolume, KeyToPath, PodPlan, ProjectedVolume,
                                      SecretVolume, TokenProjection, Volume)

RENEW_AT = 0.8


class VolumeNotReady(RuntimeError):
    """A volume cannot be set up yet (a Secret or key missing, a token refused); retried."""


@dataclass(frozen=True)
class VolumeSource:
    """Where a volume's content lives on the machine, and whether the node view must create it."""

    path: str
    node_runtime_dir: bool = False


def write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _select(data: dict[str, bytes], items: tuple[KeyToPath, ...], what: str) -> dict[str, bytes]:
    if not items:
        return dict(data)
    out = {}
    for item in items:
        if item.key not in data:
            raise VolumeNotReady(f"{what} has no key {item.key!r} (yet)")
        out[item.path] = data[item.key]
    return out


class VolumeManager:
    """Sets up and refreshes the volumes of the pods of one node."""

    def __init__(self, core, pods_dir: Path, host_path: Callable[[str], VolumeSource],
                 clock: Callable[[], float] = time.time):
        self.core = core
        self.pods_dir = pods_dir
        self.host_path = host_path
        self.clock = clock
        self._renew_at: dict[str, float] = {}     # pod uid -> when its tokens need renewing

    def pod_dir(self, uid: str) -> Path:
        return self.pods_dir / uid

    def setup(self, plan: PodPlan) -> dict[str, VolumeSource]:
        """Every volume of ``plan`` ready on disk; raises :class:`VolumeNotReady`."""
        out = {}
        self._renew_at.pop(plan.uid, None)
        for name, volume in plan.volumes.items():
            out[name] = self._setup_one(plan, name, volume)
        return out

    def needs_renewal(self, uid: str) -> bool:
        due = self._renew_at.get(uid)
        return due is not None and self.clock() >= due

    def forget(self, uid: str) -> None:
        self._renew_at.pop(uid, None)

    def _setup_one(self, plan: PodPlan, name: str, volume: Volume) -> VolumeSource:
        if isinstance(volume, HostPathVolume):
            return self.host_path(volume.path)
        target = self.pod_dir(plan.uid) / "volumes" / name
        target.mkdir(parents=True, exist_ok=True)
        if isinstance(volume, EmptyDirVolume):
            return VolumeSource(str(target))
        if isinstance(volume, SecretVolume):
            files = self._secret(plan, volume)
            mode = volume.default_mode
        else:
            files = self._projected(plan, volume)
            mode = volume.default_mode
        for rel, data in files.items():
            write_file(target / rel, data, mode)
        return VolumeSource(str(target))

    def _secret(self, plan: PodPlan, volume: SecretVolume) -> dict[str, bytes]:
        from kubernetes.client.exceptions import ApiException
        what = f"Secret {plan.namespace}/{volume.secret_name}"
        try:
            secret = self.core.read_namespaced_secret(volume.secret_name, plan.namespace)
        except ApiException as exc:
            if exc.status == 404 and volume.optional:
                return {}
            raise VolumeNotReady(f"{what}: {exc.status} {exc.reason}") from None
        data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        return _select(data, volume.items, what)

    def _projected(self, plan: PodPlan, volume: ProjectedVolume) -> dict[str, bytes]:
        from kubernetes.client.exceptions import ApiException
        files: dict[str, bytes] = {}
        for source in volume.sources:
            if isinstance(source, FieldProjection):
                files[source.path] = source.value.encode()
            elif isinstance(source, ConfigMapProjection):
                what = f"ConfigMap {plan.namespace}/{source.name}"
                try:
                    cm = self.core.read_namespaced_config_map(source.name, plan.namespace)
                except ApiException as exc:
                    if exc.status == 404 and source.optional:
                        continue
                    raise VolumeNotReady(f"{what}: {exc.status} {exc.reason}") from None
                data = {k: v.encode() for k, v in (cm.data or {}).items()}
                files.update(_select(data, source.items, what))
            elif isinstance(source, TokenProjection):
                files[source.path] = self._token(plan, source).encode()
        return files

    def _token(self, plan: PodPlan, source: TokenProjection) -> str:
        from kubernetes import client as k8s
        from kubernetes.client.exceptions import ApiException
        body = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(
            audiences=[source.audience] if source.audience else [],
            expiration_seconds=source.expiration_seconds,
            bound_object_ref=k8s.V1BoundObjectReference(kind="Pod", api_version="v1",
                                                        name=plan.name, uid=plan.uid)))
        try:
            issued = self.core.create_namespaced_service_account_token(
                plan.service_account, plan.namespace, body)
        except ApiException as exc:
            raise VolumeNotReady(f"token for ServiceAccount {plan.namespace}/{plan.service_account}: "
                                 f"{exc.status} {exc.reason}") from None
        lifetime = issued.status.expiration_timestamp.timestamp() - self.clock()
        due = self.clock() + RENEW_AT * max(lifetime, 60.0)
        self._renew_at[plan.uid] = min(self._renew_at.get(plan.uid, due), due)
        return issued.status.token
