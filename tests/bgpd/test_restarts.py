"""The delay before bgpd restarts a child that exited."""
from bgpd.restarts import RestartBackoff


def test_doubles_while_the_child_keeps_dying_and_starts_over_after_a_stable_run():
    backoff = RestartBackoff(maximum=5.0)
    assert [backoff.after_exit(uptime=1.0) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.after_exit(uptime=61.0) == 1.0
    assert backoff.after_exit(uptime=1.0) == 2.0
