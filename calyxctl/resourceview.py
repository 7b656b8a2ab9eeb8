"""What ``calyxctl get`` shows of IPPools, BGPPeers and BGPConfigurations: one row per object
in calicoctl's columns, parsed through :mod:`calyx.model` so that the values shown are the ones
the daemons use (CRD defaults filled in). An object the daemons would refuse is still listed,
with what its raw spec says, and its validation error (naming field and value) beside it.

Pure code: raw objects and the CRD spec schemas in, rows out. A BGP password is shown as the
Secret and key it refers to, never a value (a BGPPeer holds no value anyway).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from calyx import model
from calyx.specschema import SpecSchemas

INVALID = "<invalid>"


@dataclass(frozen=True)
class Kind:
    """One resource kind ``get`` knows: its names on the command line and its columns."""

    kind: str
    plural: str
    aliases: tuple[str, ...]
    columns: tuple[str, ...]
    wide_columns: tuple[str, ...]


IPPOOL = Kind(model.KIND_IPPOOL, "ippools", ("ippool", "ippools", "pool", "pools"),
              ("NAME", "CIDR", "SELECTOR"),
              ("NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "BLOCKSIZE",
               "SELECTOR"))
BGPPEER = Kind(model.KIND_BGP_PEER, "bgppeers", ("bgppeer", "bgppeers", "peer", "peers"),
               ("NAME", "PEERIP", "NODE", "ASN"),
               ("NAME", "PEERIP", "NODE", "ASN", "PEERSELECTOR", "KEEPORIGINALNEXTHOP", "SOURCEADDRESS",
                "HOLDTIME", "MAXRESTARTTIME", "PASSWORD"))
BGPCONFIG = Kind(model.KIND_BGP_CONFIGURATION, "bgpconfigurations",
                 ("bgpconfig", "bgpconfigs", "bgpconfiguration", "bgpconfigurations"),
                 ("NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"),
                 ("NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER", "LISTENPORT", "SERVICECLUSTERIPS",
                  "SERVICEEXTERNALIPS", "SERVICELOADBALANCERIPS", "MESHPASSWORD", "MESHMAXRESTARTTIME"))
KINDS = (IPPOOL, BGPPEER, BGPCONFIG)


def kind_named(word: str) -> Kind:
    """The kind a command-line word names (``ippool``, ``bgppeers``, ``bgpconfig`` ...)."""
    for kind in KINDS:
        if word.lower() in kind.aliases:
            return kind
    known = ", ".join(alias for k in KINDS for alias in k.aliases)
    raise ValueError(f"unknown resource type {word!r}; known: {known}")


@dataclass(frozen=True)
class Row:
    """One object: its cells (in the kind's columns) and, if the daemons refuse it, why."""

    name: str
    cells: tuple[str, ...]
    error: str | None = None


def _text(value: Any, empty: str = "") -> str:
    if value is None:
        return empty
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:g}s"


def _secret_ref(ref: model.SecretKeyRef | None) -> str:
    return f"secret {ref.name} key {ref.key}" if ref else ""


def _raw_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("name") or "?") if isinstance(meta, Mapping) else "?"


def _pool_cells(obj: Mapping[str, Any], pool: model.IPPool | None, wide: bool) -> tuple[str, ...]:
    spec = _raw_spec(obj)
    selector = spec.get("nodeSelector") or "all()"
    if pool is None:
        cells = {"CIDR": _text(spec.get("cidr"), INVALID), "SELECTOR": _text(selector),
                 "NAT": _text(spec.get("natOutgoing")), "IPIPMODE": _text(spec.get("ipipMode")),
                 "VXLANMODE": _text(spec.get("vxlanMode")), "DISABLED": _text(spec.get("disabled")),
                 "DISABLEBGPEXPORT": _text(spec.get("disableBGPExport")), "BLOCKSIZE": _text(spec.get("blockSize"))}
    else:
        cells = {"CIDR": str(pool.cidr), "SELECTOR": str(selector), "NAT": _text(pool.nat_outgoing),
                 "IPIPMODE": pool.ipip_mode.value, "VXLANMODE": pool.vxlan_mode.value,
                 "DISABLED": _text(pool.disabled), "DISABLEBGPEXPORT": _text(pool.disable_bgp_export),
                 "BLOCKSIZE": str(pool.block_size)}
    return _pick(IPPOOL, cells, _name(obj), wide)


def _peer_node(spec: Mapping[str, Any]) -> str:
    if spec.get("node"):
        return str(spec["node"])
    if spec.get("nodeSelector"):
        return str(spec["nodeSelector"])
    return "(global)"


def _peer_cells(obj: Mapping[str, Any], peer: model.BGPPeer | None, wide: bool) -> tuple[str, ...]:
    spec = _raw_spec(obj)
    password = spec.get("password")
    ref = password.get("secretKeyRef") if isinstance(password, Mapping) else None
    raw_ref = (f"secret {ref.get('name')} key {ref.get('key')}" if isinstance(ref, Mapping) else "")
    if peer is None:
        cells = {"PEERIP": _text(spec.get("peerIP")), "ASN": _text(spec.get("asNumber")),
                 "PEERSELECTOR": _text(spec.get("peerSelector")),
                 "KEEPORIGINALNEXTHOP": _text(spec.get("keepOriginalNextHop")),
                 "SOURCEADDRESS": _text(spec.get("sourceAddress")), "HOLDTIME": _text(spec.get("holdTime")),
                 "MAXRESTARTTIME": _text(spec.get("maxRestartTime")), "PASSWORD": raw_ref}
    else:
        address = ""
        if peer.peer_ip is not None:
            address = str(peer.peer_ip) if peer.peer_port == model.DEFAULT_BGP_PORT \
                else f"{peer.peer_ip}:{peer.peer_port}"
        cells = {"PEERIP": address, "ASN": _text(peer.as_number, "(node's)" if peer.peer_selector else ""),
                 "PEERSELECTOR": _text(spec.get("peerSelector")),
                 "KEEPORIGINALNEXTHOP": _text(peer.keep_original_next_hop),
                 "SOURCEADDRESS": peer.source_address, "HOLDTIME": _seconds(peer.hold_time),
                 "MAXRESTARTTIME": _seconds(peer.max_restart_time), "PASSWORD": _secret_ref(peer.password)}
    cells["NODE"] = _peer_node(spec)
    return _pick(BGPPEER, cells, _name(obj), wide)


def _cidrs(networks: Sequence[Any]) -> str:
    return ",".join(str(n) for n in networks)


def _config_cells(obj: Mapping[str, Any], config: model.BGPConfiguration | None,
                  wide: bool) -> tuple[str, ...]:
    spec = _raw_spec(obj)
    if config is None:
        cells = {"LOGSEVERITY": _text(spec.get("logSeverityScreen")),
                 "MESHENABLED": _text(spec.get("nodeToNodeMeshEnabled")),
                 "ASNUMBER": _text(spec.get("asNumber")), "LISTENPORT": _text(spec.get("listenPort")),
                 "SERVICECLUSTERIPS": "", "SERVICEEXTERNALIPS": "", "SERVICELOADBALANCERIPS": "",
                 "MESHPASSWORD": "", "MESHMAXRESTARTTIME": _text(spec.get("nodeMeshMaxRestartTime"))}
    else:
        cells = {"LOGSEVERITY": _text(config.log_severity_screen),
                 "MESHENABLED": _text(config.node_to_node_mesh_enabled),
                 "ASNUMBER": str(config.as_number), "LISTENPORT": str(config.listen_port),
                 "SERVICECLUSTERIPS": _cidrs(config.service_cluster_ips),
                 "SERVICEEXTERNALIPS": _cidrs(config.service_external_ips),
                 "SERVICELOADBALANCERIPS": _cidrs(config.service_load_balancer_ips),
                 "MESHPASSWORD": _secret_ref(config.node_mesh_password),
                 "MESHMAXRESTARTTIME": _seconds(config.node_mesh_max_restart_time)}
    return _pick(BGPCONFIG, cells, _name(obj), wide)


def _pick(kind: Kind, cells: Mapping[str, str], name: str, wide: bool) -> tuple[str, ...]:
    columns = kind.wide_columns if wide else kind.columns
    return tuple(name if column == "NAME" else cells.get(column, "") for column in columns)


_SHAPERS: dict[str, tuple[Callable[[Mapping[str, Any], SpecSchemas], Any], Callable[..., tuple[str, ...]]]] = {
    model.KIND_IPPOOL: (model.parse_ippool, _pool_cells),
    model.KIND_BGP_PEER: (model.parse_bgp_peer, _peer_cells),
    model.KIND_BGP_CONFIGURATION: (model.parse_bgp_configuration, _config_cells),
}


def rows(kind: Kind, objects: Sequence[Mapping[str, Any]], schemas: SpecSchemas, wide: bool = False) -> list[Row]:
    """One row per object, sorted by name; invalid objects carry their validation error."""
    parse, shape = _SHAPERS[kind.kind]
    out = []
    for obj in objects:
        try:
            parsed, error = parse(obj, schemas), None
        except model.ValidationError as exc:
            parsed, error = None, str(exc)
        out.append(Row(_name(obj), shape(obj, parsed, wide), error))
    return sorted(out, key=lambda r: r.name)


def columns(kind: Kind, wide: bool) -> tuple[str, ...]:
    return kind.wide_columns if wide else kind.columns


def without_server_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as ``-o yaml|json`` prints it: without managedFields and kubectl's last-applied copy."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = dict(meta.get("annotations") or {})
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    return out
