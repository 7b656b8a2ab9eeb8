"""The emulator's pure parts: label/field selector parsing, patch algorithms, tables, CRD parsing."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from calyxlab.apiserver.errors import APIError
from calyxlab.apiserver.patching import json_patch, merge_patch, strategic_merge_patch
from calyxlab.apiserver.resources import from_crd
from calyxlab.apiserver.selectors import parse_field_selector, parse_label_selector
from calyxlab.apiserver.tables import human_age, json_path


@pytest.mark.parametrize("selector, labels, expected", [
    ("", {}, True),
    ("a=b", {"a": "b"}, True),
    ("a==b", {"a": "c"}, False),
    ("a!=b", {}, True),
    ("a!=b", {"a": "b"}, False),
    ("a in (b, c)", {"a": "c"}, True),
    ("a in (b,c)", {}, False),
    ("a notin (b,c)", {}, True),
    ("a notin (b,c)", {"a": "b"}, False),
    ("a", {"a": ""}, True),
    ("!a", {"a": ""}, False),
    ("!a", {"b": "x"}, True),
    ("app.kubernetes.io/name=web,tier in (front),!canary", {"app.kubernetes.io/name": "web", "tier": "front"}, True),
    ("x=", {"x": ""}, True),
    ("a in ()", {"a": "b"}, False),
])
def test_label_selector(selector: str, labels: dict, expected: bool) -> None:
    assert parse_label_selector(selector).matches(labels) is expected


@pytest.mark.parametrize("selector", ["a in (b", "a=b,", ",a", "a b", "a=(b)", "a in b", "a=b c", "=b", "a=-b"])
def test_label_selector_errors_quote_the_selector(selector: str) -> None:
    with pytest.raises(APIError) as err:
        parse_label_selector(selector)
    assert err.value.code == 400 and repr(selector) in err.value.message


def test_field_selector() -> None:
    obj = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1", "hostNetwork": True}}
    assert parse_field_selector("spec.nodeName=n1,metadata.namespace==ns", "Pod").matches(obj)
    assert not parse_field_selector("spec.nodeName!=n1", "Pod").matches(obj)
    assert parse_field_selector("spec.hostNetwork=true", "Pod").matches(obj)
    with pytest.raises(APIError) as err:
        parse_field_selector("spec.nodeName=n1", "Node")
    assert err.value.code == 400 and "spec.nodeName" in err.value.message


def test_json_patch_operations_and_escapes() -> None:
    doc = {"metadata": {"annotations": {"a/b": "1"}}, "list": [1, 2, 3]}
    out = json_patch(doc, [{"op": "replace", "path": "/metadata/annotations/a~1b", "value": "2"},
                           {"op": "add", "path": "/list/-", "value": 4},
                           {"op": "add", "path": "/list/0", "value": 0},
                           {"op": "move", "from": "/list/1", "path": "/moved"},
                           {"op": "copy", "from": "/moved", "path": "/copied"},
                           {"op": "remove", "path": "/list/0"},
                           {"op": "test", "path": "/copied", "value": 1}])
    assert out == {"metadata": {"annotations": {"a/b": "2"}}, "list": [2, 3, 4], "moved": 1, "copied": 1}
    assert doc["list"] == [1, 2, 3]                       # the input is not modified
    with pytest.raises(APIError) as err:
        json_patch(doc, [{"op": "remove", "path": "/nope"}])
    assert err.value.code == 422 and "/nope" in err.value.message


def test_merge_patch() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None, "d": 3}, "l": [2]}) == \
        {"a": {"c": 2, "d": 3}, "l": [2]}


def test_strategic_merge_patch_directives() -> None:
    pod = {"metadata": {"finalizers": ["a"]}, "spec": {"containers": [
        {"name": "a", "image": "1", "env": [{"name": "X", "value": "1"}]}, {"name": "b", "image": "1"}],
        "tolerations": [{"key": "t1"}]}}
    out = strategic_merge_patch(pod, {
        "metadata": {"finalizers": ["b"]},
        "spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]}, {"name": "c", "image": "3"}],
                 "tolerations": [{"key": "t2"}],
                 "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}, "Pod")
    assert out["metadata"]["finalizers"] == ["a", "b"]
    assert [c["name"] for c in out["spec"]["containers"]] == ["c", "a", "b"]
    assert out["spec"]["containers"][1]["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    assert out["spec"]["tolerations"] == [{"key": "t2"}]  # lists without a merge key replace
    replaced = strategic_merge_patch(pod, {"spec": {"$patch": "replace", "containers": []}}, "Pod")
    assert replaced["spec"] == {"containers": []}
    trimmed = strategic_merge_patch(pod, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}, "Pod")
    assert trimmed["metadata"]["finalizers"] == []


def test_json_path_and_ages() -> None:
    obj = {"metadata": {"labels": {"a.b/c": "x"}}, "status": {"conditions": [{"type": "Ready"}]}}
    assert json_path(obj, ".status.conditions[0].type") == "Ready"
    assert json_path(obj, ".metadata.labels['a.b/c']") == "x"
    assert json_path(obj, ".spec.missing") is None
    now = datetime(2026, 1, 10, tzinfo=timezone.utc)
    stamp = lambda delta: (now - delta).strftime("%Y-%m-%dT%H:%M:%SZ")   # noqa: E731
    assert human_age(stamp(timedelta(seconds=42)), now) == "42s"
    assert human_age(stamp(timedelta(minutes=3, seconds=5)), now) == "3m5s"
    assert human_age(stamp(timedelta(hours=30)), now) == "30h"
    assert human_age(stamp(timedelta(days=3, hours=2)), now) == "3d2h"


def test_crd_errors_name_field_and_value() -> None:
    crd = {"metadata": {"name": "things.example.com"},
           "spec": {"group": "example.com", "scope": "Cluster", "names": {"plural": "things", "kind": "Thing"},
                    "versions": [{"name": "v1", "served": True,
                                  "additionalPrinterColumns": [{"name": "X"}]}]}}
    with pytest.raises(APIError) as err:
        from_crd(crd)
    assert err.value.code == 422 and "additionalPrinterColumns[0]" in err.value.message
    crd["spec"]["versions"][0].pop("additionalPrinterColumns")
    crd["metadata"]["name"] = "wrong.example.com"
    with pytest.raises(APIError) as err:
        from_crd(crd)
    assert "metadata.name" in err.value.message and "things.example.com" in err.value.message
