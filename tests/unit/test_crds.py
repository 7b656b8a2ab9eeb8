"""The CRD YAML: valid Kubernetes CRDs with structural schemas, CEL rules that say what the model
enforces (evaluated with a CEL interpreter), defaults equal to the model's, and the directory
search the daemons use to find them."""
from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import kubernetes_validate
import pytest
import yaml

from calyx import crds, model
from crdrules import cel_failures

REPO_CRD_DIR = Path(__file__).resolve().parents[2] / "charts" / "calyx" / "crds"
KINDS = {"IPPool": "ippools", "BGPConfiguration": "bgpconfigurations", "BGPPeer": "bgppeers",
         "IPAMBlock": "ipamblocks"}


def documents() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted(REPO_CRD_DIR.glob("*.yaml"))]


def schema_nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path or "<root>", schema
    for name, sub in schema.get("properties", {}).items():
        yield from schema_nodes(sub, f"{path}.{name}")
    if "items" in schema:
        yield from schema_nodes(schema["items"], f"{path}[]")


# --- Shape --------------------------------------------------------------------------------------

def test_every_kind_has_one_crd_file():
    loaded = crds.load_crds(REPO_CRD_DIR)
    assert {kind: crd.plural for kind, crd in loaded.items()} == KINDS
    for crd in loaded.values():
        assert crd.path.name == f"calyx.dev_{crd.plural}.yaml"
        assert crd.name == f"{crd.plural}.calyx.dev"


@pytest.mark.parametrize("doc", documents(), ids=lambda d: d["spec"]["names"]["kind"])
def test_crd_is_valid_against_the_kubernetes_api_schema(doc):
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    spec = doc["spec"]
    assert doc["metadata"]["name"] == f"{spec['names']['plural']}.calyx.dev"
    assert (spec["group"], spec["scope"]) == ("calyx.dev", "Cluster")
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [("v1", True, True)]
    # Nothing in Calyx writes status, so no CRD has a status subresource.
    assert "subresources" not in spec["versions"][0]


@pytest.mark.parametrize("doc", documents(), ids=lambda d: d["spec"]["names"]["kind"])
def test_schema_is_structural(doc):
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in schema_nodes(schema):
        assert "type" in node, f"{path} has no type"
        assert not ({"anyOf", "oneOf", "allOf", "not"} & set(node)), f"{path} uses a logical junctor"
        assert "$ref" not in node and "additionalProperties" not in node, path
        if "default" in node:
            assert not ({"properties"} & set(node)) or node["default"] == {}, path
        if "enum" in node and "default" in node:
            assert node["default"] in node["enum"], path
    assert schema["properties"]["metadata"] == {"type": "object"}


@pytest.mark.parametrize("doc", documents(), ids=lambda d: d["spec"]["names"]["kind"])
def test_printer_columns_point_at_schema_fields(doc):
    version = doc["spec"]["versions"][0]
    spec_props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for column in version["additionalPrinterColumns"]:
        match = re.fullmatch(r"\.spec\.(\w+)", column["jsonPath"])
        if match:
            assert spec_props[match.group(1)]["type"] == column["type"], column


def test_ippool_printer_columns():
    doc = next(d for d in documents() if d["spec"]["names"]["kind"] == "IPPool")
    columns = {c["name"]: c["jsonPath"] for c in doc["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {k: columns[k] for k in ("CIDR", "IPIP", "BLOCK", "DISABLED")} == {
        "CIDR": ".spec.cidr", "IPIP": ".spec.ipipMode", "BLOCK": ".spec.blockSize", "DISABLED": ".spec.disabled"}


def test_enums_match_the_model():
    ippool = crds.crd("IPPool", REPO_CRD_DIR).spec_schema["properties"]
    assert ippool["ipipMode"]["enum"] == [m.value for m in model.EncapMode]
    assert ippool["vxlanMode"]["enum"] == [m.value for m in model.EncapMode]
    peer = crds.crd("BGPPeer", REPO_CRD_DIR).spec_schema["properties"]
    assert peer["sourceAddress"]["enum"] == ["UseNodeIP", "None"]


# --- Defaults: the CRD's and the model's agree ---------------------------------------------------

def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


# Fields whose model default is None, "no object at all", so that the daemon's own setting holds;
# a parsed object carries the CRD's default (tests/unit/test_model.py).
NO_OBJECT_DEFAULTS = {("BGPConfiguration", "logSeverityScreen")}


@pytest.mark.parametrize("kind, cls", [("IPPool", model.IPPool), ("BGPConfiguration", model.BGPConfiguration),
                                       ("BGPPeer", model.BGPPeer)])
def test_model_defaults_equal_crd_defaults(kind, cls):
    defaults = crds.spec_defaults(kind, REPO_CRD_DIR)
    assert defaults, kind
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for crd_name, crd_default in defaults.items():
        f = fields[snake(crd_name)]
        value = f.default_factory() if f.default is dataclasses.MISSING else f.default
        value = value.text if isinstance(value, model.Selector) else value
        value = value.value if isinstance(value, model.EncapMode) else value
        if (kind, crd_name) in NO_OBJECT_DEFAULTS:
            assert value is None, (kind, crd_name)
            continue
        if isinstance(value, float) and isinstance(crd_default, str):
            crd_default = model.parse_duration(crd_default)     # durations are kept in seconds
        assert value == crd_default, (kind, crd_name)


def test_module_constants_equal_crd_defaults():
    defaults = crds.spec_defaults("BGPConfiguration", REPO_CRD_DIR)
    assert defaults["asNumber"] == model.DEFAULT_AS_NUMBER
    assert defaults["listenPort"] == model.DEFAULT_BGP_PORT
    assert crds.crd("BGPPeer", REPO_CRD_DIR).spec_schema["properties"]["asNumber"]["maximum"] == model.MAX_AS_NUMBER


def test_apply_defaults_like_the_api_server():
    schema = {"type": "object", "properties": {
        "a": {"type": "integer", "default": 1},
        "obj": {"type": "object", "properties": {"x": {"type": "string", "default": "d"}}},
        "filled": {"type": "object", "default": {}, "properties": {"y": {"type": "boolean", "default": True}}},
        "items": {"type": "array", "items": {"type": "object", "properties": {"z": {"type": "integer", "default": 3}}}},
    }}
    original = {"a": None, "items": [{}, {"z": 4}], "unknown": None}
    kept = copy.deepcopy(original)
    assert crds.apply_defaults(schema, original) == {
        "a": 1, "filled": {"y": True}, "items": [{"z": 3}, {"z": 4}], "unknown": None}
    assert original == kept
    assert crds.apply_defaults(schema, {"obj": {}})["obj"] == {"x": "d"}


# --- CEL rules: present, and in agreement with the model -----------------------------------------

def test_cel_rules_are_present_for_the_xor_rules():
    peer = crds.crd("BGPPeer", REPO_CRD_DIR).spec_schema
    rules = [v["rule"] for v in peer["x-kubernetes-validations"]]
    assert "!(has(self.node) && has(self.nodeSelector))" in rules
    assert "has(self.peerIP) != has(self.peerSelector)" in rules
    assert "!has(self.peerIP) || has(self.asNumber)" in rules
    pool = crds.crd("IPPool", REPO_CRD_DIR).spec_schema
    pool_rules = [v["rule"] for v in pool["x-kubernetes-validations"]]
    assert any("vxlanMode" in rule and "ipipMode" in rule for rule in pool_rules)
    block = crds.crd("IPAMBlock", REPO_CRD_DIR).schema
    assert "self.metadata.name" in block["x-kubernetes-validations"][0]["rule"]


PEER_SPECS = [
    ({"peerIP": "10.0.0.1", "asNumber": 65000}, True),
    ({"peerIP": "10.0.0.1"}, False),
    ({"peerSelector": "all()"}, True),
    ({"peerSelector": "all()", "asNumber": 65000}, False),
    ({"peerSelector": "all()", "node": "n1"}, True),
    ({"peerSelector": "all()", "nodeSelector": "all()"}, True),
    ({"peerSelector": "all()", "node": "n1", "nodeSelector": "all()"}, False),
    ({"peerIP": "10.0.0.1", "asNumber": 1, "peerSelector": "all()"}, False),
    ({"asNumber": 1}, False),
    ({}, False),
]
POOL_SPECS = [
    ({"cidr": "10.0.0.0/16"}, True),
    ({"cidr": "10.0.0.0/24", "blockSize": 22}, False),
    ({"cidr": "10.0.0.0/27", "blockSize": 26}, False),
    ({"cidr": "10.0.0.0/26", "blockSize": 26}, True),
    ({"cidr": "10.0.0.0/16", "vxlanMode": "Always"}, True),
    ({"cidr": "10.0.0.0/16", "vxlanMode": "CrossSubnet", "ipipMode": "Never"}, True),
    ({"cidr": "10.0.0.0/16", "vxlanMode": "Always", "ipipMode": "Always"}, False),
    ({"cidr": "10.0.0.0/16", "vxlanMode": "CrossSubnet", "ipipMode": "CrossSubnet"}, False),
    ({"cidr": "fd00::/64"}, False),
]
BLOCK_OBJECTS = [
    ("10-244-1-0-26", "10.244.1.0/26", True),
    ("10-244-1-64-26", "10.244.1.0/26", False),
]


@pytest.mark.parametrize("spec, valid", PEER_SPECS)
def test_bgp_peer_cel_rules_agree_with_the_model(spec, valid):
    schema = crds.crd("BGPPeer", REPO_CRD_DIR).schema
    document = {"metadata": {"name": "p"}, "spec": crds.apply_defaults(schema["properties"]["spec"], spec)}
    assert (cel_failures(schema, document) == []) is valid
    assert model_accepts(model.parse_bgp_peer, document) is valid


@pytest.mark.parametrize("spec, valid", POOL_SPECS)
def test_ippool_cel_rules_agree_with_the_model(spec, valid):
    schema = crds.crd("IPPool", REPO_CRD_DIR).schema
    document = {"metadata": {"name": "p"}, "spec": crds.apply_defaults(schema["properties"]["spec"], spec)}
    failures = cel_failures(schema, document)
    assert (failures == []) is valid
    if spec["cidr"].count(":"):
        assert "IPv6 pools are not supported yet" in failures
    assert model_accepts(model.parse_ippool, document) is valid


@pytest.mark.parametrize("name, cidr, valid", BLOCK_OBJECTS)
def test_ipam_block_name_rule_agrees_with_the_model(name, cidr, valid):
    schema = crds.crd("IPAMBlock", REPO_CRD_DIR).schema
    document = {"metadata": {"name": name}, "spec": {"cidr": cidr, "affinity": "host:n1"}}
    assert (cel_failures(schema, document) == []) is valid
    assert (model.block_name(cidr) == name) is valid
    assert model_accepts(model.parse_ipam_block, document) is valid


def model_accepts(parse, document) -> bool:
    try:
        parse(document, crds.spec_schemas(REPO_CRD_DIR))
    except model.ValidationError:
        return False
    return True


# --- Finding the directory ----------------------------------------------------------------------

def test_repository_directory_is_found_by_default():
    assert crds.crd_dir({}) == REPO_CRD_DIR


def test_search_order():
    candidates = crds.candidate_dirs({"CALYX_CRD_DIR": "/opt/x"})
    assert candidates == [Path("/opt/x"), REPO_CRD_DIR, Path(sys.prefix) / "share" / "calyx" / "crds",
                          Path("/usr/share/calyx/crds")]
    assert crds.candidate_dirs({})[0] == REPO_CRD_DIR


def test_environment_override(tmp_path):
    shutil.copy(REPO_CRD_DIR / "calyx.dev_ippools.yaml", tmp_path)
    assert crds.crd_dir({"CALYX_CRD_DIR": str(tmp_path)}) == tmp_path
    loaded = crds.load_crds(tmp_path)
    assert list(loaded) == ["IPPool"]
    assert crds.load_crds(tmp_path) is loaded          # read once, then cached
    with pytest.raises(crds.CRDError, match="no CRD for kind BGPPeer"):
        crds.crd("BGPPeer", tmp_path)


def test_environment_override_must_exist(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(crds.CRDError, match=f"CALYX_CRD_DIR={missing} is not a directory"):
        crds.crd_dir({"CALYX_CRD_DIR": str(missing)})


def test_process_environment_is_honoured(tmp_path, monkeypatch):
    shutil.copy(REPO_CRD_DIR / "calyx.dev_bgppeers.yaml", tmp_path)
    monkeypatch.setenv("CALYX_CRD_DIR", str(tmp_path))
    assert crds.crd_dir() == tmp_path
    assert crds.crd("BGPPeer").path == tmp_path / "calyx.dev_bgppeers.yaml"


def test_broken_crd_files_are_reported(tmp_path):
    (tmp_path / "bad.yaml").write_text("kind: CustomResourceDefinition\nspec: {group: calyx.dev}\n")
    with pytest.raises(crds.CRDError, match="bad.yaml: not a usable calyx.dev/v1 CRD"):
        crds.load_crds(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.yaml").write_text("kind: ConfigMap\n")
    with pytest.raises(crds.CRDError, match="no CustomResourceDefinition found"):
        crds.load_crds(empty)
    dup = tmp_path / "dup"
    dup.mkdir()
    shutil.copy(REPO_CRD_DIR / "calyx.dev_ippools.yaml", dup / "a.yaml")
    shutil.copy(REPO_CRD_DIR / "calyx.dev_ippools.yaml", dup / "b.yaml")
    with pytest.raises(crds.CRDError, match="kind IPPool is also defined"):
        crds.load_crds(dup)


def test_spec_schemas_are_read_and_validators_compiled_once():
    schemas = crds.spec_schemas(REPO_CRD_DIR)
    assert schemas is crds.spec_schemas(REPO_CRD_DIR)
    assert schemas.validator("IPPool") is schemas.validator("IPPool")
    assert schemas.kinds == {"IPPool", "BGPConfiguration", "BGPPeer", "IPAMBlock"}
    with pytest.raises(KeyError, match="no CRD schema for kind Pod"):
        schemas.spec_schema("Pod")
