"""How a command enters a node: its network namespace plus a private view of the filesystem.

Pure: builds argv only. ``ip netns exec`` gives each command its own mount namespace (slave
to the host's), so bind mounts made there are invisible outside. Every command in a node -
daemons, ``exec`` lines, ``calyx-lab exec`` - gets the same view: the node's ``binds`` on their
destinations, and per-node runtime directories on the paths the node's daemons use for pid
files and control sockets (``/run/frr``, ``/run/bird``, ``/run/calyx``), exactly like the
private filesystem of a container. A cluster node's CNI directories (``/opt/cni/bin``,
``/etc/cni/net.d``) are per-node runtime directories too: what the chart's install-cni writes
there is what that node's container runtime finds. A bind destination that does not exist on
this machine is created empty first (it must exist to be mounted over).

:func:`host_path` maps a path on a node's "host" filesystem to the directory that backs it, so
the lab's kubelet can give a pod's ``hostPath`` volumes the node's own directories.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from calyxlab.state import LabNames
from calyxlab.topology import Node, Role


@dataclass(frozen=True)
class Mount:
    source: str
    destination: str
    read_only: bool = False
    is_runtime_dir: bool = False     # created (per node) before mounting
    owner: str | None = None         # user:group for a runtime dir


def runtime_dirs(role: Role) -> tuple[tuple[str, str, str | None], ...]:
    """(sub-directory of the node run dir, mount point, owner) per role."""
    if role is Role.FRR:
        return (("frr", "/run/frr", "frr:frr"),)
    if role is Role.BIRD:
        return (("bird", "/run/bird", None),)
    if role is Role.CLUSTER:
        return (("calyx", "/run/calyx", None), ("cni-bin", "/opt/cni/bin", None),
                ("cni-conf", "/etc/cni/net.d", None))
    return ()


def host_path(names: LabNames, node: Node, path: str) -> str:
    """The directory backing ``path`` of ``node``'s own filesystem (pure).

    Paths under one of the node's runtime directories resolve into it (``/var/run`` is
    ``/run``); anything else is the machine's own path, which every node shares.
    """
    normal = str(Path("/") / path)
    if normal == "/var/run" or normal.startswith("/var/run/"):
        normal = "/run" + normal[len("/var/run"):]
    for sub, mount_point, _ in runtime_dirs(node.role):
        if normal == mount_point or normal.startswith(mount_point + "/"):
            return str(names.node_run_dir(node.name) / sub) + normal[len(mount_point):]
    return normal


def calyx_run_dir(names: LabNames, node: str) -> str:
    """CALYX_RUN_DIR of a cluster node (also mounted on /run/calyx in its view)."""
    return str(names.node_run_dir(node) / "calyx")


def mounts(names: LabNames, node: Node) -> tuple[Mount, ...]:
    out = [Mount(str(names.node_run_dir(node.name) / sub), dest, False, True, owner)
           for sub, dest, owner in runtime_dirs(node.role)]
    out += [Mount(str(b.source), b.destination, b.mode == "ro") for b in node.binds]
    return tuple(out)


def _mount_lines(m: Mount, source_is_dir: bool) -> list[str]:
    src, dst = shlex.quote(m.source), shlex.quote(m.destination)
    lines = []
    if m.is_runtime_dir:
        owner = f" -o {m.owner.split(':')[0]} -g {m.owner.split(':')[1]}" if m.owner else ""
        # made on the node's first entry; a test is a shell builtin, a command a process start
        # (dear in user-mode Linux, and every exec in a node runs these lines)
        lines.append(f"[ -d {src} ] || install -d{owner} {src}")
        lines.append(f"[ -d {dst} ] || mkdir -p {dst}")
    elif source_is_dir:
        lines.append(f"[ -e {dst} ] || mkdir -p {dst}")
    else:
        parent = shlex.quote(str(Path(m.destination).parent))
        lines.append(f"[ -e {dst} ] || {{ mkdir -p {parent} && : > {dst}; }}")
    lines.append(f"mount --bind {src} {dst}")
    if m.read_only:
        lines.append(f"mount -o remount,bind,ro {dst}")
    return lines


def enter_argv(names: LabNames, node: Node, argv: list[str] | tuple[str, ...], *,
               extra: tuple[Mount, ...] = (), tail: str = 'exec "$@"') -> list[str]:
    """argv that runs ``argv`` inside ``node`` (namespace + filesystem view).

    ``extra`` mounts go on top of the node's own (a container's volumes); ``tail`` is the
    shell that finally runs ``"$@"`` (the lab's kubelet wraps it to record the exit status).
    """
    base = ["ip", "netns", "exec", names.namespace(node.name)]
    node_mounts = mounts(names, node) + tuple(extra)
    if not node_mounts and tail == 'exec "$@"':
        return base + list(argv)
    lines = ["set -e"]
    for m in node_mounts:
        lines += _mount_lines(m, m.is_runtime_dir or Path(m.source).is_dir())
    lines.append(tail)
    return base + ["sh", "-c", "\n".join(lines), "calyx-node"] + list(argv)
