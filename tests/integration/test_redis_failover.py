"""Redis fails over under a live call (deploy/redis/: a primary, a replica and
three Sentinels, TLS and ACL users; two node processes): the primary is killed
with kill -9, media never stops, the API takes writes again within 10 s, events
flow between the nodes again, and the consult and session are as they were."""

from __future__ import annotations

from tests.support.failover import run_failover


async def test_a_redis_failover_under_a_live_call(tokens, tmp_path):
    figures = await run_failover(tmp_path, tokens)
    print(figures)
    assert figures.kill_to_api_s < 10.0
    assert figures.longest_media_gap_s < 1.0  # frames kept arriving at the subscriber
