"""Bad values stop `helm template`/`helm install` before anything reaches a cluster, with a
message naming the value (values.schema.json, or the chart's cross-field checks)."""
from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from chart_support import CHART, EXAMPLE_VALUES, TEST_VALUES, Helm

# values file -> fragments the error must contain (the value's path, and the value where shown).
INVALID = {
    "invalid-cidr.yaml": ["/ipPool/cidr", "10.300.0.0/16"],
    "invalid-ipip-mode.yaml": ["/ipPool/ipipMode", "'Always', 'CrossSubnet', 'Never'"],
    "invalid-block-size.yaml": ["/ipPool/blockSize", "40"],
    "invalid-host-bits.yaml": ["ipPool.cidr", "10.244.7.0/16", "10.244.0.0/16"],
    "invalid-block-larger-than-pool.yaml": ["ipPool.blockSize", "22", "10.244.0.0/24"],
    "invalid-peer-missing-fields.yaml": ["/bgp/externalPeers/0", "asNumber"],
    "invalid-peer-password.yaml": ["/bgp/externalPeers/0/password/secretKeyRef", "key"],
    "invalid-peer-node-and-selector.yaml": ["bgp.externalPeers[0]", "tor-a", "node-1", "rack == 'a'"],
    "invalid-peer-ip.yaml": ["/bgp/externalPeers/0/peerIP", "10.0.0.256"],
    "invalid-as-number.yaml": ["/bgp/asNumber", "maximum"],
    "invalid-unknown-key.yaml": ["/ipPool", "ipipmode"],
}


def test_every_invalid_values_file_is_listed() -> None:
    assert {p.name for p in TEST_VALUES.glob("invalid-*.yaml")} == set(INVALID)


@pytest.mark.parametrize("filename", sorted(INVALID))
def test_invalid_values_are_rejected_naming_the_value(helm: Helm, filename: str) -> None:
    error = helm.template_error(values=[TEST_VALUES / filename])
    for fragment in INVALID[filename]:
        assert fragment in error, f"{filename}: {fragment!r} missing from:\n{error}"


def test_schema_is_draft7_and_accepts_the_defaults_and_examples() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert not list(validator.iter_errors(defaults))
    for example in sorted(EXAMPLE_VALUES.glob("*.yaml")):
        merged = _merge(defaults, yaml.safe_load(example.read_text()))
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(merged)]
        assert not errors, f"{example.name}: {errors}"


@pytest.mark.parametrize("cidr,ok", [
    ("10.244.0.0/16", True), ("192.168.0.0/16", True), ("0.0.0.0/0", True), ("10.1.2.3/32", True),
    ("10.244.0.0", False), ("10.244.0.0/33", False), ("256.0.0.0/8", False), ("fd00::/64", False),
    ("10.244.0.0/16 ", False), ("010.1.0.0/16", False),
])
def test_cidr_pattern(cidr: str, ok: bool) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema["properties"]["ipPool"]["properties"]["cidr"])
    assert validator.is_valid(cidr) is ok, cidr


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
