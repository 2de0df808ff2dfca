"""The load run's audit reconciliation (bench/reliability.py, transition_problem): what it accepts and what it flags."""

from __future__ import annotations

from bench.reliability import transition_problem

GH, PERSON, AGENT = "gatehouse", "human", "agent"


def test_an_auto_write_refreshed_by_the_worker_is_one_event_per_transition():
    events = [
        ("proposed", AGENT),
        ("auto_approved", GH),
        ("executing", GH),
        ("refreshed", GH),
        ("executed", GH),
    ]

    assert transition_problem(events, "executed", reviewed=False) == ""


def test_a_stale_write_approved_again_by_a_person_is_one_event_per_transition():
    events = [
        ("proposed", AGENT),
        ("auto_approved", GH),
        ("executing", GH),
        ("stale", GH),
        ("refreshed", PERSON),  # an approval on figures that moved again: it did not count
        ("approved", PERSON),
        ("executing", GH),
        ("executed", GH),
    ]

    assert transition_problem(events, "executed", reviewed=False) == ""


def test_a_write_after_a_stale_without_a_new_approval_is_flagged():
    events = [
        ("proposed", AGENT),
        ("approved", PERSON),
        ("executing", GH),
        ("stale", GH),
        ("executing", GH),
        ("executed", GH),
    ]

    assert "decisions that counted" in transition_problem(events, "executed", reviewed=False)


def test_a_write_on_an_approval_that_did_not_count_is_flagged():
    events = [("proposed", AGENT), ("approved", PERSON), ("refreshed", PERSON), ("executing", GH), ("executed", GH)]

    assert "did not count" in transition_problem(events, "executed", reviewed=False)


def test_a_transition_recorded_twice_is_flagged():
    events = [("proposed", AGENT), ("auto_approved", GH), ("executing", GH), ("executed", GH), ("executed", GH)]

    assert "executed ×2" in transition_problem(events, "executed", reviewed=False)


def test_a_missing_review_and_an_unexpected_verb_are_flagged():
    events = [("proposed", AGENT), ("rejected", PERSON), ("reversed", PERSON)]

    problem = transition_problem(events, "rejected", reviewed=True)

    assert "reviewed ×0 (expected 1)" in problem
    assert "reversed ×1 (not a transition of this run)" in problem
