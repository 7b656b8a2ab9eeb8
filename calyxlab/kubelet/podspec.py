"""What a Pod object asks the lab's kubelet to run (pure).

:func:`parse_pod` turns a Pod as the API serves it (JSON) into a :class:`PodPlan`: its
containers with their command, environment (``value`` and the downward API's ``fieldRef``),
volume mounts and HTTP probes, and its volumes. Anything the lab's kubelet cannot honour is a
:class:`PodSpecError` naming the pod, the field and the value, never silently dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

DEFAULT_GRACE_SECONDS = 30
DEFAULT_TOKEN_SECONDS = 3607


class PodSpecError(ValueError):
    """The pod asks for something the lab's kubelet does not do."""


@dataclass(frozen=True)
class HttpProbe:
    host: str
    port: int
    path: str
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1


@dataclass(frozen=True)
class HostPathVolume:
    path: str


@dataclass(frozen=True)
class EmptyDirVolume:
    pass


@dataclass(frozen=True)
class KeyToPath:
    key: str
    path: str


@dataclass(frozen=True)
class SecretVolume:
    secret_name: str
    items: tuple[KeyToPath, ...] = ()
    default_mode: int = 0o644
    optional: bool = False


@dataclass(frozen=True)
class TokenProjection:
    path: str
    expiration_seconds: int = DEFAULT_TOKEN_SECONDS
    audience: str | None = None


@dataclass(frozen=True)
class ConfigMapProjection:
    name: str
    items: tuple[KeyToPath, ...] = ()
    optional: bool = False


@dataclass(frozen=True)
class FieldProjection:
    path: str
    value: str               # resolved at parse time: the pod's fields do not change


@dataclass(frozen=True)
class ProjectedVolume:
    sources: tuple[TokenProjection | ConfigMapProjection | FieldProjection, ...]
    default_mode: int = 0o644


Volume = HostPathVolume | EmptyDirVolume | SecretVolume | ProjectedVolume


@dataclass(frozen=True)
class VolumeMount:
    volume: str
    mount_path: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    image: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    mounts: tuple[VolumeMount, ...]
    readiness: HttpProbe | None = None
    liveness: HttpProbe | None = None
    startup: HttpProbe | None = None
    init: bool = False


@dataclass(frozen=True)
class PodPlan:
    uid: str
    namespace: str
    name: str
    node: str
    service_account: str
    host_network: bool
    init_containers: tuple[ContainerPlan, ...]
    containers: tuple[ContainerPlan, ...]
    volumes: Mapping[str, Volume] = field(default_factory=dict)
    grace_seconds: int = DEFAULT_GRACE_SECONDS
    deleting: bool = False
    deletion_grace_seconds: int | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def _field_value(pod: Mapping[str, Any], field_path: str, host_ip: str) -> str | None:
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    simple = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
              "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
              "spec.serviceAccountName": spec.get("serviceAccountName"),
              "status.hostIP": host_ip, "status.podIP": host_ip}
    if field_path in simple:
        return simple[field_path] or ""
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", field_path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    return None


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known variables replaced, ``$$`` escapes ``$``."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR_REF.sub(sub, text)


def _env(pod: Mapping[str, Any], container: Mapping[str, Any], where: str,
         host_ip: str) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for i, item in enumerate(container.get("env") or []):
        name = item["name"]
        if "valueFrom" not in item:
            out[name] = expand(item.get("value", ""), out)
            continue
        source = item["valueFrom"]
        ref = source.get("fieldRef")
        if ref is None:
            raise PodSpecError(f"{where}.env[{i}] ({name}).valueFrom: {sorted(source)} is not "
                               f"supported by the lab's kubelet (only fieldRef)")
        value = _field_value(pod, ref.get("fieldPath", ""), host_ip)
        if value is None:
            raise PodSpecError(f"{where}.env[{i}] ({name}).valueFrom.fieldRef.fieldPath: "
                               f"{ref.get('fieldPath')!r} is not supported")
        out[name] = value
    if container.get("envFrom"):
        raise PodSpecError(f"{where}.envFrom is not supported by the lab's kubelet")
    return tuple(out.items())


def _probe(container: Mapping[str, Any], kind: str, where: str, host_ip: str) -> HttpProbe | None:
    raw = container.get(kind)
    if not raw:
        return None
    get = raw.get("httpGet")
    if get is None:
        raise PodSpecError(f"{where}.{kind}: only httpGet probes are supported by the lab's kubelet")
    port = get.get("port")
    if isinstance(port, str) and not port.isdigit():
        named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        if port not in named:
            raise PodSpecError(f"{where}.{kind}.httpGet.port: {port!r} names no container port")
        port = named[port]
    if (get.get("scheme") or "HTTP").upper() != "HTTP":
        raise PodSpecError(f"{where}.{kind}.httpGet.scheme: {get.get('scheme')!r}: only HTTP")
    return HttpProbe(host=get.get("host") or host_ip, port=int(port), path=get.get("path") or "/",
                     initial_delay=float(raw.get("initialDelaySeconds", 0)),
                     period=float(raw.get("periodSeconds", 10)),
                     timeout=float(raw.get("timeoutSeconds", 1)),
                     failure_threshold=int(raw.get("failureThreshold", 3)),
                     success_threshold=int(raw.get("successThreshold", 1)))


def _container(pod: Mapping[str, Any], raw: Mapping[str, Any], where: str, host_ip: str,
               init: bool) -> ContainerPlan:
    env = _env(pod, raw, where, host_ip)
    env_map = dict(env)
    argv = [*(raw.get("command") or []), *(raw.get("args") or [])]
    if not raw.get("command"):
        raise PodSpecError(f"{where}.command: not set; the lab's kubelet has no image entrypoint "
                           f"to fall back on (image {raw.get('image')!r})")
    mounts = []
    for j, m in enumerate(raw.get("volumeMounts") or []):
        if m.get("subPath") or m.get("subPathExpr"):
            raise PodSpecError(f"{where}.volumeMounts[{j}].subPath is not supported by the lab's kubelet")
        mounts.append(VolumeMount(m["name"], m["mountPath"], bool(m.get("readOnly"))))
    return ContainerPlan(name=raw["name"], image=raw.get("image", ""),
                         argv=tuple(expand(a, env_map) for a in argv), env=env,
                         mounts=tuple(mounts),
                         readiness=None if init else _probe(raw, "readinessProbe", where, host_ip),
                         liveness=None if init else _probe(raw, "livenessProbe", where, host_ip),
                         startup=None if init else _probe(raw, "startupProbe", where, host_ip),
                         init=init)


def _items(raw: Mapping[str, Any]) -> tuple[KeyToPath, ...]:
    return tuple(KeyToPath(i["key"], i["path"]) for i in raw.get("items") or [])


def _volume(pod: Mapping[str, Any], raw: Mapping[str, Any], where: str, host_ip: str) -> Volume:
    if "hostPath" in raw:
        return HostPathVolume(raw["hostPath"]["path"])
    if "emptyDir" in raw:
        return EmptyDirVolume()
    if "secret" in raw:
        s = raw["secret"]
        return SecretVolume(s["secretName"], _items(s), int(s.get("defaultMode", 0o644)),
                            bool(s.get("optional")))
    if "projected" in raw:
        p = raw["projected"]
        sources: list[TokenProjection | ConfigMapProjection | FieldProjection] = []
        for k, src in enumerate(p.get("sources") or []):
            if "serviceAccountToken" in src:
                t = src["serviceAccountToken"]
                sources.append(TokenProjection(t["path"], int(t.get("expirationSeconds", DEFAULT_TOKEN_SECONDS)),
                                               t.get("audience")))
            elif "configMap" in src:
                c = src["configMap"]
                sources.append(ConfigMapProjection(c["name"], _items(c), bool(c.get("optional"))))
            elif "downwardAPI" in src:
                for item in src["downwardAPI"].get("items") or []:
                    path = item.get("fieldRef", {}).get("fieldPath", "")
                    value = _field_value(pod, path, host_ip)
                    if value is None:
                        raise PodSpecError(f"{where}.projected.sources[{k}].downwardAPI: fieldPath "
                                           f"{path!r} is not supported")
                    sources.append(FieldProjection(item["path"], value))
            else:
                raise PodSpecError(f"{where}.projected.sources[{k}]: {sorted(src)} is not supported")
        return ProjectedVolume(tuple(sources), int(p.get("defaultMode", 0o644)))
    kinds = sorted(k for k in raw if k != "name")
    raise PodSpecError(f"{where}: volume type {kinds} is not supported by the lab's kubelet")


def parse_pod(pod: Mapping[str, Any], host_ip: str) -> PodPlan:
    """The plan for ``pod`` (a Pod as JSON) on a node whose address is ``host_ip``."""
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    ref = f"pod {meta.get('namespace')}/{meta.get('name')}"
    volumes = {v["name"]: _volume(pod, v, f"{ref}: spec.volumes[{i}] ({v['name']})", host_ip)
               for i, v in enumerate(spec.get("volumes") or [])}
    init = tuple(_container(pod, c, f"{ref}: spec.initContainers[{i}] ({c['name']})", host_ip, True)
                 for i, c in enumerate(spec.get("initContainers") or []))
    main = tuple(_container(pod, c, f"{ref}: spec.containers[{i}] ({c['name']})", host_ip, False)
                 for i, c in enumerate(spec.get("containers") or []))
    for c in init + main:
        for m in c.mounts:
            if m.volume not in volumes:
                raise PodSpecError(f"{ref}: container {c.name}: volumeMount {m.volume!r} names no volume")
    return PodPlan(uid=meta.get("uid", ""), namespace=meta.get("namespace", ""), name=meta.get("name", ""),
                   node=spec.get("nodeName", ""), service_account=spec.get("serviceAccountName") or "default",
                   host_network=bool(spec.get("hostNetwork")), init_containers=init, containers=main,
                   volumes=volumes,
                   grace_seconds=int(spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)),
                   deleting=bool(meta.get("deletionTimestamp")),
                   deletion_grace_seconds=meta.get("deletionGracePeriodSeconds"))
