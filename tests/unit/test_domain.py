from __future__ import annotations

import itertools

import pytest

from nano_banana.domain import ACTIVE, TERMINAL, TRANSITIONS, JobStatus, check_transition, sources_for
from nano_banana.errors import InvalidTransition

pytestmark = pytest.mark.unit


def test_terminal_states_have_no_way_out() -> None:
    for status in TERMINAL:
        assert TRANSITIONS[status] == frozenset()
        for target in JobStatus:
            with pytest.raises(InvalidTransition):
                check_transition(status, target)


def test_the_documented_lifecycle_is_exactly_the_table() -> None:
    allowed = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    expected = {
        (JobStatus.queued, JobStatus.running),
        (JobStatus.queued, JobStatus.failed),
        (JobStatus.queued, JobStatus.canceled),
        (JobStatus.running, JobStatus.running),  # a redelivered generate task re-claims the job
        (JobStatus.running, JobStatus.succeeded),
        (JobStatus.running, JobStatus.failed),
        (JobStatus.running, JobStatus.canceled),
    }
    assert allowed == expected
    for a, b in itertools.product(JobStatus, JobStatus):
        if (a, b) in expected:
            check_transition(a, b)
        else:
            with pytest.raises(InvalidTransition) as info:
                check_transition(a, b)
            assert info.value.status == 409
            assert info.value.code == "invalid_transition"


def test_cas_source_lists_follow_the_table() -> None:
    assert set(sources_for(JobStatus.succeeded)) == {JobStatus.running}
    assert set(sources_for(JobStatus.canceled)) == set(ACTIVE)
    assert set(sources_for(JobStatus.failed)) == set(ACTIVE)
    assert set(sources_for(JobStatus.running)) == set(ACTIVE)
    assert sources_for(JobStatus.queued) == ()
