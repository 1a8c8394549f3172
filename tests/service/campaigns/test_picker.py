"""The config picker: spread over the space, away from what is measured, toward where peers disagree."""

from __future__ import annotations

import numpy as np

from service.campaigns.picker import disagreement, embed, pick_spread


def _two_clusters() -> np.ndarray:
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 0.1, size=(20, 2))
    b = rng.normal(10.0, 0.1, size=(20, 2))
    return np.vstack([a, b])


def test_picks_spread_over_both_clusters() -> None:
    points = _two_clusters()
    chosen = pick_spread(points, np.zeros((0, 2)), 2)
    assert len(chosen) == len(set(chosen)) == 2
    assert {i < 20 for i in chosen} == {True, False}  # one from each cluster


def test_picks_go_where_nothing_is_measured_yet() -> None:
    points = _two_clusters()
    measured = points[:3]  # cluster a is covered already
    chosen = pick_spread(points, measured, 3)
    assert all(i >= 20 for i in chosen[:1])
    # No candidate is picked twice, and never more than there are.
    assert len(pick_spread(points, measured, 100)) == 40


def test_disagreement_prefers_the_disputed_candidate_among_equally_far_ones() -> None:
    angles = np.linspace(0.0, 2 * np.pi, 8, endpoint=False)
    ring = np.column_stack([np.cos(angles), np.sin(angles)])  # all at distance 1 from the measured centre
    measured = np.zeros((1, 2))
    assert pick_spread(ring, measured, 1) == [0]  # a tie: the first
    disputed = np.zeros(8)
    disputed[5] = 0.3
    assert pick_spread(ring, measured, 1, disputed=disputed) == [5]


def test_disagreement_ignores_a_constant_speed_factor_between_peers() -> None:
    own = np.log(np.array([1.0, 2.0, 4.0, 8.0]))
    twice_as_fast = own - np.log(2.0)
    assert np.allclose(disagreement(np.column_stack([own, twice_as_fast])), 0.0)
    reordered = np.log(np.array([8.0, 2.0, 4.0, 1.0]))
    spread = disagreement(np.column_stack([own, reordered]))
    assert spread[0] > 0 and spread[3] > 0 and spread[0] > spread[1]
    assert np.allclose(disagreement(own[:, None]), 0.0)  # one peer cannot disagree with itself


def test_embedding_scales_costs_by_log_and_drops_constant_columns() -> None:
    rows = np.array([[1e3, 5.0, 1.0], [1e6, 5.0, 2.0], [1e9, 5.0, 3.0]])
    points = embed(rows)
    assert points.shape == (3, 2)  # the constant column is gone
    # Decades of cost are evenly spaced after the log: 1e3 → 1e6 as far as 1e6 → 1e9.
    assert np.isclose(points[1, 0] - points[0, 0], points[2, 0] - points[1, 0], rtol=1e-2)
    with_peers = embed(rows, np.log(np.array([[1.0, 3.0], [2.0, 1.0], [4.0, 2.0]])))
    assert with_peers.shape == (3, 4)
