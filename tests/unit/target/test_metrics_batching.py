"""Metrics.observe queues and every render folds the queue in: /metrics stays exact, and the
queue stays bounded without a scrape."""

from __future__ import annotations

from spikegate.target.metrics import FLUSH_AT, Metrics


def test_render_counts_every_observation_made_before_it() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.observe("/bid", 429, "rate_limited", 0.0002)
    metrics.observe("/bid", 200, "admitted", 0.01)
    text = metrics.render().decode()
    assert 'spikegate_rejection_seconds_count{layer="edge"} 3.0' in text
    assert 'spikegate_rejection_seconds_bucket{layer="edge",le="0.00025"} 3.0' in text
    assert 'spikegate_requests_total{decision="admitted",route="/bid",status="200"} 1.0' in text
    metrics.observe("/bid", 429, "rate_limited", 0.0002)
    assert 'spikegate_rejection_seconds_count{layer="edge"} 4.0' in metrics.render().decode()


def test_the_queue_is_folded_in_without_a_scrape_and_stays_bounded() -> None:
    metrics = Metrics()
    for _ in range(10_000):
        metrics.observe("/impression", 503, "shed", 0.0001)
    assert 0 < metrics.pending() < FLUSH_AT
    text = metrics.render().decode()
    assert 'spikegate_decisions_total{layer="impressions",reason="shed"} 10000.0' in text
