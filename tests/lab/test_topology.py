"""Topology parsing: containerlab's inheritance, path resolution, and every refusal's message."""
from __future__ import annotations

import textwrap
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from calyxlab.topology import Role, TopologyError, load, role_for_image


def write(tmp_path: Path, text: str, name: str = "lab.clab.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_kinds_and_defaults_merge_like_containerlab(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    for f in ("d.conf", "k.conf", "n.conf", "shared"):
        (tmp_path / "cfg" / f).write_text("x")
    path = write(tmp_path, """
        name: merge
        topology:
          defaults:
            kind: linux
            image: default/image:1
            env: {A: defaults, B: defaults, C: defaults}
            labels: {tier: defaults, zone: z1}
            exec: ["echo defaults"]
            binds: ["cfg/d.conf:/etc/d.conf", "cfg/shared:/etc/shared"]
          kinds:
            linux:
              image: kind/image:2
              env: {B: kind, C: kind}
              labels: {tier: kind}
              exec: ["echo kind"]
              binds: ["cfg/k.conf:/etc/k.conf", "cfg/d.conf:/etc/shared"]
          nodes:
            n1:
              env: {C: node}
              exec: ["echo node"]
              binds: ["cfg/n.conf:/etc/n.conf"]
            n2:
              image: own/image:3
              cmd: sleep infinity
    """)
    topo = load(path)
    n1, n2 = topo.node("n1"), topo.node("n2")
    assert n1.kind == "linux" and n1.image == "kind/image:2" and n2.image == "own/image:3"
    assert dict(n1.env) == {"A": "defaults", "B": "kind", "C": "node"}
    assert dict(n1.labels) == {"tier": "kind", "zone": "z1"}
    assert n1.exec == ("echo defaults", "echo kind", "echo node")
    assert n2.exec == ("echo defaults", "echo kind")
    assert n2.cmd == "sleep infinity" and n1.cmd == ""
    # node binds first, then kind, then defaults; a destination already bound keeps the
    # more specific source (the kind's /etc/shared wins over the defaults').
    assert [(b.source.name, b.destination) for b in n1.binds] == [
        ("n.conf", "/etc/n.conf"), ("k.conf", "/etc/k.conf"), ("d.conf", "/etc/shared"),
        ("d.conf", "/etc/d.conf")]


def test_relative_bind_paths_are_relative_to_the_topology_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "frr.conf").write_text("!")
    path = write(tmp_path / "sub", """
        name: binds
        topology:
          nodes:
            r: {kind: linux, image: quay.io/frrouting/frr:8.4.4, binds: ["frr.conf:/etc/frr/frr.conf:ro"]}
    """)
    monkeypatch.chdir("/")
    bind = load(path).node("r").binds[0]
    assert bind.source == tmp_path / "sub" / "frr.conf"
    assert bind.destination == "/etc/frr/frr.conf" and bind.mode == "ro"


def test_mgmt_addresses_explicit_then_in_order_from_dot_two(tmp_path: Path) -> None:
    path = write(tmp_path, """
        name: mgmt
        mgmt: {network: m, ipv4-subnet: 10.201.5.0/24}
        topology:
          defaults: {kind: linux, image: alpine}
          nodes:
            a: {}
            b: {mgmt-ipv4: 10.201.5.2}
            c: {}
    """)
    topo = load(path)
    assert topo.mgmt.subnet == IPv4Network("10.201.5.0/24")
    assert topo.mgmt.gateway == IPv4Address("10.201.5.1")
    assert topo.mgmt_addresses == {"a": IPv4Address("10.201.5.3"), "b": IPv4Address("10.201.5.2"),
                                   "c": IPv4Address("10.201.5.4")}
    # an overriding subnet keeps explicit addresses at their host offset
    moved = load(path, mgmt_subnet="172.31.9.0/24").mgmt_addresses
    assert moved == {"a": IPv4Address("172.31.9.3"), "b": IPv4Address("172.31.9.2"),
                     "c": IPv4Address("172.31.9.4")}

def test_default_mgmt_subnet_and_name_override(tmp_path: Path) -> None:
    path = write(tmp_path, """
        name: orig
        topology:
          nodes: {a: {kind: linux, image: alpine}}
    """)
    topo = load(path, name="other", mgmt_subnet="172.31.44.0/24")
    assert topo.name == "other" and topo.namespace("a") == "clab-other-a"
    assert topo.mgmt_addresses["a"] == IPv4Address("172.31.44.2")
    assert load(path).mgmt.subnet == IPv4Network("172.20.20.0/24")


def test_both_link_forms(tmp_path: Path) -> None:
    path = write(tmp_path, """
        name: links
        topology:
          defaults: {kind: linux, image: alpine}
          nodes: {a: {}, b: {}}
          links:
            - endpoints: ["a:eth1", "b:eth1"]
            - type: veth
              endpoints: [{node: a, interface: e2}, {node: b, interface: e2}]
    """)
    links = load(path).links
    assert [(str(l.a), str(l.b)) for l in links] == [("a:eth1", "b:eth1"), ("a:e2", "b:e2")]


@pytest.mark.parametrize("image,role", [
    ("calyx/node:latest", Role.CLUSTER), ("calyx/node", Role.CLUSTER),
    ("ghcr.io/calyx/node:0.1", Role.CLUSTER), ("frrouting/frr:v8.4.0", Role.FRR),
    ("quay.io/frrouting/frr:9.1.0", Role.FRR), ("pierky/bird:2.15", Role.BIRD),
    ("jauderho/gobgp:v3.30.0", Role.GOBGP), ("alpine:3", Role.HOST),
    ("ghcr.io/hellt/network-multitool", Role.HOST), ("registry:5000/x/calyx/nodes", Role.HOST)])
def test_role_by_image(image: str, role: Role) -> None:
    assert role_for_image(image) is role


BASE = """
    name: bad
    topology:
      defaults: {kind: linux, image: alpine}
      nodes: {a: {}, b: {}}
"""


@pytest.mark.parametrize("extra,message", [
    ("""
      links:
        - endpoints: ["a:eth1", "c:eth1"]
     """, "/topology/links/0/endpoints/1: 'c:eth1': unknown node 'c' (nodes: a, b)"),
    ("""
      links:
        - endpoints: ["a:eth1", "b:eth1"]
        - endpoints: ["a:eth2", "b:eth1"]
     """, "/topology/links/1/endpoints/1: 'b:eth1': interface already used by "
          "/topology/links/0/endpoints/1"),
    ("""
      links:
        - endpoints: ["a:eth1", "a:eth1"]
     """, "/topology/links/0/endpoints/1: 'a:eth1': interface already used by "
          "/topology/links/0/endpoints/0"),
    ("""
      links:
        - endpoints: ["a:eth0", "b:eth1"]
     """, "/topology/links/0/endpoints/0: 'a:eth0': eth0 is the management interface and "
          "cannot be used by a link"),
    ("""
      links:
        - endpoints: ["a:eth1"]
     """, "/topology/links/0/endpoints: a veth link has exactly two endpoints, got ['a:eth1']"),
    ("""
      links:
        - endpoints: ["a:averyveryverylongname", "b:eth1"]
     """, "/topology/links/0/endpoints/0: 'averyveryverylongname': not a valid Linux interface "
          "name (at most 15 characters, no '/' or spaces)"),
])
def test_bad_links_are_refused_with_file_path_and_problem(tmp_path: Path, extra: str,
                                                          message: str) -> None:
    path = write(tmp_path, textwrap.dedent(BASE) + textwrap.indent(textwrap.dedent(extra), "  "))
    with pytest.raises(TopologyError) as exc:
        load(path)
    assert str(exc.value) == f"{path}: {message}"


def test_missing_bind_source_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, """
        name: bad
        topology:
          nodes:
            r: {kind: linux, image: pierky/bird:2.15, binds: ["bird/bird.conf:/etc/bird/bird.conf"]}
    """)
    with pytest.raises(TopologyError) as exc:
        load(path)
    assert str(exc.value) == (f"{path}: /topology/nodes/r/binds/0: 'bird/bird.conf:/etc/bird/"
                              f"bird.conf': bind source '{tmp_path}/bird/bird.conf' does not exist")


def test_bad_yaml_is_refused_with_its_position(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ntopology:\n  nodes: [a\n")
    with pytest.raises(TopologyError) as exc:
        load(path)
    assert str(exc.value).startswith(f"{path}: /: bad YAML: line 4 column 1: ")


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, """
        name: bad
        topology:
          nodes:
            r1: {kind: nokia_srlinux, image: ghcr.io/nokia/srlinux}
    """)
    with pytest.raises(TopologyError) as exc:
        load(path)
    assert str(exc.value) == (f"{path}: /topology/nodes/r1/kind: unknown kind 'nokia_srlinux' "
                              "(supported: linux)")


@pytest.mark.parametrize("doc,message", [
    ("topology: {nodes: {a: {kind: linux, image: x}}}", "/name: a lab name is required, got None"),
    ("name: x\ntopology: {nodes: {}}", "/topology/nodes: a topology needs at least one node"),
    ("name: x\ntopology: {nodes: {a: {kind: linux}}}",
     "/topology/nodes/a/image: no image given (node, kind 'linux' or defaults), got None"),
    ("name: x\nmgmt: {ipv4-subnet: 10.1.2.3/24}\ntopology: {nodes: {a: {kind: linux, image: x}}}",
     "/mgmt/ipv4-subnet: '10.1.2.3/24' is not an IPv4 subnet: 10.1.2.3/24 has host bits set"),
    ("name: x\nmgmt: {ipv4-subnet: 10.1.2.0/24}\n"
     "topology: {nodes: {a: {kind: linux, image: x, mgmt-ipv4: 10.1.3.4}}}",
     "/topology/nodes/a/mgmt-ipv4: 10.1.3.4 is not a host address of the mgmt subnet 10.1.2.0/24"),
    ("name: x\ntopology: {nodes: {a: {kind: linux, image: x, mgmt-ipv4: 172.20.20.1}}}",
     "/topology/nodes/a/mgmt-ipv4: 172.20.20.1 is reserved (gateway 172.20.20.1, "
     "lab agent 172.20.20.254)"),
    ("name: x\ntopology: {nodes: {a: {kind: linux, image: x, mgmt-ipv4: 172.20.20.9}, "
     "b: {kind: linux, image: x, mgmt-ipv4: 172.20.20.9}}}",
     "/topology/nodes/b/mgmt-ipv4: 172.20.20.9 is already the mgmt address of node 'a'"),
    ("name: x\ntopology: {nodes: {a: {kind: linux, image: x, env: {K: [1]}}}}",
     "/topology/nodes/a/env/K: expected a string value, got [1]"),
    ("name: x\ntopology: {nodes: {a: {kind: linux, image: x, exec: 'ip link'}}}",
     "/topology/nodes/a/exec: expected a list of strings, got 'ip link'"),
    ("name: 'a b'\ntopology: {nodes: {a: {kind: linux, image: x}}}",
     "/name: 'a b': names use letters, digits, '-', '_' and '.', starting with a letter or digit"),
])
def test_other_refusals(tmp_path: Path, doc: str, message: str) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(TopologyError) as exc:
        load(path)
    assert str(exc.value) == f"{path}: {message}"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as exc:
        load(tmp_path / "absent.clab.yml")
    assert str(exc.value) == (f"{tmp_path}/absent.clab.yml: /: cannot read the topology file: "
                              "No such file or directory")
