"""felix.probesend and felix.netnsthread without entering a namespace: where namespaces are
looked for, and the errors that name what is missing."""
from __future__ import annotations

import os
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from felix.netnsthread import call_in_netns, netns_path
from felix.probesend import NamespaceSearch, ProbeSendError, send_echo


def test_candidates_come_once_per_namespace_run_dirs_first(tmp_path: Path) -> None:
    run, var_run = tmp_path / "run", tmp_path / "var-run"
    run.mkdir()
    var_run.mkdir()
    (run / "cni-b").write_text("")
    (run / "cni-a").write_text("")
    os.link(run / "cni-a", var_run / "same-as-cni-a")          # one namespace under two names
    (var_run / "other").write_text("")
    search = NamespaceSearch(dirs=(str(run), str(var_run)), proc=None)
    assert list(search.candidates()) == [str(run / "cni-a"), str(run / "cni-b"), str(var_run / "other")]


def test_candidates_include_processes_namespaces(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid in ("1", "42", "self"):
        (proc / pid / "ns").mkdir(parents=True)
        (proc / pid / "ns" / "net").write_text(pid)
    found = sorted(NamespaceSearch(dirs=(), proc=str(proc)).candidates())
    assert found == [str(proc / "1" / "ns" / "net"), str(proc / "42" / "ns" / "net")]


def test_names_are_under_run_netns_and_paths_are_kept() -> None:
    assert netns_path("cni-1234") == "/run/netns/cni-1234"
    assert netns_path("/proc/7/ns/net") == "/proc/7/ns/net"


def test_a_missing_namespace_is_reported_not_entered(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        call_in_netns(str(tmp_path / "gone"), lambda: None)
    with pytest.raises(ProbeSendError) as info:
        send_echo(str(tmp_path / "gone"), IPv4Address("10.244.1.2"), IPv4Address("10.244.2.3"), bytes(8))
    assert info.value.status == 404 and "is gone" in str(info.value)


@pytest.mark.lab     # setns(2), into this process's own namespace
def test_the_functions_exception_reaches_the_caller() -> None:
    def fail() -> None:
        raise ValueError("inside")
    with pytest.raises(ValueError, match="inside"):
        call_in_netns("/proc/self/ns/net", fail)
    assert call_in_netns("/proc/self/ns/net", lambda: 7) == 7
