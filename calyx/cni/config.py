"""CNI request parsing and result rendering: stdin network config + CNI_* environment -> a
typed request, and the spec's result/error JSON. Pure code (no I/O).

Follows the CNI specification 1.0.0 (and renders results for 0.3.x/0.4.0 callers too).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, Mapping

from calyx import naming

SPEC_VERSION = "1.0.0"
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
DEFAULT_RUN_DIR = naming.DEFAULT_RUN_DIR
DEFAULT_MTU = 1500
MAX_CACHE_TTL_S = 60.0                 # the block garbage collector's node grace must stay above it
PLUGIN_TYPE = "calyx"

# Error codes from the specification, and Calyx's own (100 and above).
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_CONFIG = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_ENV = 7
ERR_TRY_AGAIN_LATER = 11
ERR_IPAM_EXHAUSTED = 100
ERR_API = 101
ERR_NETLINK = 102
ERR_CHECK_FAILED = 103

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION")


class CniError(Exception):
    """A failure reported to the runtime as the spec's error object."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str = SPEC_VERSION) -> str:
        body: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            body["details"] = self.details
        return json.dumps(body)


@dataclass(frozen=True)
class NetConf:
    """The network configuration the runtime passes on stdin."""

    cni_version: str
    name: str
    kubeconfig: str | None
    nodename: str
    run_dir: str
    mtu: int | None                       # None: read $run_dir/mtu (felix writes it), else 1500
    prev_result: Mapping[str, Any] | None = None
    ipam_cache_ttl: float | None = None   # None: the IPAM default (ipam.CACHE_TTL_S)


@dataclass(frozen=True)
class CniEnv:
    """The CNI_* environment of one invocation."""

    command: str
    container_id: str
    netns: str                             # path; may be empty for DEL
    ifname: str
    args: Mapping[str, str] = field(default_factory=dict)

    @property
    def pod_namespace(self) -> str | None:
        return self.args.get("K8S_POD_NAMESPACE")

    @property
    def pod_name(self) -> str | None:
        return self.args.get("K8S_POD_NAME")


def parse_cni_args(text: str) -> dict[str, str]:
    """``CNI_ARGS`` ("K1=V1;K2=V2") -> dict. A pair without '=' is an invalid environment."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise CniError(ERR_INVALID_ENV, f"CNI_ARGS: malformed pair {part!r} (want KEY=VALUE)")
        out[key.strip()] = value.strip()
    return out


def parse_env(env: Mapping[str, str]) -> CniEnv:
    """Read CNI_COMMAND and the variables that command requires."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(ERR_INVALID_ENV, f"CNI_COMMAND: {command!r}: must be one of {', '.join(COMMANDS)}")
    if command == "VERSION":
        return CniEnv(command=command, container_id="", netns="", ifname="")
    required = {"ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
                "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
                "DEL": ("CNI_CONTAINERID", "CNI_IFNAME")}.get(command, ())
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise CniError(ERR_INVALID_ENV, f"CNI {command}: missing environment variable(s) {', '.join(missing)}")
    ifname = env.get("CNI_IFNAME", "")
    if ifname and (len(ifname) > 15 or "/" in ifname or ifname in (".", "..")):
        raise CniError(ERR_INVALID_ENV, f"CNI_IFNAME: {ifname!r}: not a valid interface name")
    args = parse_cni_args(env.get("CNI_ARGS", ""))
    if command == "ADD":
        absent = [k for k in ("K8S_POD_NAMESPACE", "K8S_POD_NAME") if not args.get(k)]
        if absent:
            raise CniError(ERR_INVALID_ENV, f"CNI_ARGS: missing {', '.join(absent)} (Calyx serves Kubernetes pods)")
    return CniEnv(command=command, container_id=env.get("CNI_CONTAINERID", ""),
                  netns=env.get("CNI_NETNS", ""), ifname=ifname, args=args)


def peek_version(stdin: str) -> str:
    """The cniVersion of a config, or the spec version when it cannot be read (for errors)."""
    try:
        value = json.loads(stdin).get("cniVersion")
    except (ValueError, AttributeError):
        return SPEC_VERSION
    return value if isinstance(value, str) and value in SUPPORTED_VERSIONS else SPEC_VERSION


def parse_netconf(stdin: str, env: Mapping[str, str], *, require_node: bool = True) -> NetConf:
    """Parse and validate the network configuration; every error names the field and value."""
    try:
        raw = json.loads(stdin)
    except ValueError as exc:
        raise CniError(ERR_DECODE, f"network configuration on stdin is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CniError(ERR_INVALID_CONFIG, f"network configuration: must be a JSON object, got {type(raw).__name__}")
    version = raw.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise CniError(ERR_INVALID_CONFIG, f"network configuration: cniVersion: {version!r}: required string")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(ERR_INCOMPATIBLE_VERSION,
                       f"network configuration: cniVersion: {version!r}: unsupported "
                       f"(supported: {', '.join(SUPPORTED_VERSIONS)})")
    if raw.get("type") != PLUGIN_TYPE:
        raise CniError(ERR_INVALID_CONFIG, f"network configuration: type: {raw.get('type')!r}: must be {PLUGIN_TYPE!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise CniError(ERR_INVALID_CONFIG, f"network configuration: name: {name!r}: required string")
    kubeconfig = raw.get("kubeconfig") or env.get("KUBECONFIG") or None
    if kubeconfig is not None and not isinstance(kubeconfig, str):
        raise CniError(ERR_INVALID_CONFIG, f"network configuration: kubeconfig: {kubeconfig!r}: must be a path")
    nodename = raw.get("nodename") or env.get("NODENAME") or ""
    if not isinstance(nodename, str):
        raise CniError(ERR_INVALID_CONFIG, f"network configuration: nodename: {nodename!r}: must be a string")
    if require_node and not nodename:
        raise CniError(ERR_INVALID_CONFIG, "network configuration: nodename: missing (set it or the NODENAME variable)")
    run_dir = raw.get("run_dir") or env.get("CALYX_RUN_DIR") or DEFAULT_RUN_DIR
    if not isinstance(run_dir, str) or not run_dir.startswith("/"):
        raise CniError(ERR_INVALID_CONFIG, f"network configuration: run_dir: {run_dir!r}: must be an absolute path")
    mtu = raw.get("mtu")
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535):
        raise CniError(ERR_INVALID_CONFIG, f"network configuration: mtu: {mtu!r}: must be an integer in 68..65535")
    ttl = raw.get("ipam_cache_ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 <= ttl <= MAX_CACHE_TTL_S):
        raise CniError(ERR_INVALID_CONFIG, f"network configuration: ipam_cache_ttl: {ttl!r}: must be a number of "
                                           f"seconds in 0..{MAX_CACHE_TTL_S:g} (0: always ask the API)")
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise CniError(ERR_INVALID_CONFIG, f"network configuration: prevResult: {prev!r}: must be an object")
    return NetConf(cni_version=version, name=name, kubeconfig=kubeconfig, nodename=nodename,
                   run_dir=run_dir, mtu=mtu, prev_result=prev,
                   ipam_cache_ttl=None if ttl is None else float(ttl))


def parse_mtu_file(text: str, path: str) -> int:
    """The content of ``$run_dir/mtu`` (written by felix) -> MTU."""
    try:
        mtu = int(text.strip())
    except ValueError:
        raise CniError(ERR_INVALID_CONFIG, f"{path}: {text.strip()!r}: not an integer MTU") from None
    if not 68 <= mtu <= 65535:
        raise CniError(ERR_INVALID_CONFIG, f"{path}: {mtu}: MTU out of range 68..65535")
    return mtu


@dataclass(frozen=True)
class AddResult:
    """What ADD made, in the terms the result JSON needs."""

    host_ifname: str
    host_mac: str
    pod_ifname: str
    pod_mac: str
    sandbox: str
    address: IPv4Address
    gateway: IPv4Address


def render_result(version: str, res: AddResult) -> dict[str, Any]:
    """The spec's success result for ADD (1.0.0 layout; 0.3.x/0.4.0 add ``version`` to ips)."""
    ip: dict[str, Any] = {"address": f"{res.address}/32", "gateway": str(res.gateway), "interface": 1}
    if version != "1.0.0":
        ip["version"] = "4"
    return {
        "cniVersion": version,
        "interfaces": [
            {"name": res.host_ifname, "mac": res.host_mac},
            {"name": res.pod_ifname, "mac": res.pod_mac, "sandbox": res.sandbox},
        ],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": str(res.gateway)}],
        "dns": {},
    }


def render_version() -> dict[str, Any]:
    return {"cniVersion": SPEC_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}
