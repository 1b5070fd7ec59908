"""The simulated DSP bidders: seeded decisions, the bid contract, control modes, clean exit."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from spikegate.harness.services import DspBidders
from spikegate.target.dsp import Bidder, BidderSettings, InvalidBidRequest

ROOT = Path(__file__).resolve().parents[2]


def bid_request(i: int = 0, *, floor: float = 0.5, imps: int = 1) -> dict[str, Any]:
    return {
        "id": f"req-{i}",
        "imp": [{"id": f"imp-{k}", "bidfloor": floor} for k in range(imps)],
        "site": {"publisher": {"id": "pub-1"}},
        "user": {"id": f"user-{i}"},
        "tmax": 120,
    }


# --- the bidder's decisions (in-process, no network) ------------------------------------


def test_same_seed_gives_the_same_decisions_and_prices() -> None:
    a, b = Bidder.seeded(0, seed=7), Bidder.seeded(0, seed=7)
    assert [a.decide(bid_request(i)) for i in range(200)] == [
        b.decide(bid_request(i)) for i in range(200)
    ]


def test_different_seeds_and_different_bidders_decide_differently() -> None:
    def pattern(bidder: Bidder) -> list[bool]:
        return [bidder.decide(bid_request(i)) is not None for i in range(200)]

    assert pattern(Bidder.seeded(0, seed=1)) != pattern(Bidder.seeded(0, seed=2))
    assert pattern(Bidder.seeded(0, seed=1)) != pattern(Bidder.seeded(1, seed=1))


@pytest.mark.parametrize("probability", [0.0, 0.2, 0.7, 1.0])
def test_bid_ratio_follows_the_bid_probability(probability: float) -> None:
    bidder = Bidder.seeded(0, seed=3, settings=BidderSettings(bid_probability=probability))
    n = 4000
    bids = sum(bidder.decide(bid_request(i)) is not None for i in range(n))
    # binomial sd <= sqrt(n * 0.25) ~ 32; allow 5 sd
    assert abs(bids - probability * n) <= 160


def test_bids_answer_every_impression_above_its_floor_with_the_seat_name() -> None:
    bidder = Bidder.seeded(1, seed=0, settings=BidderSettings(bid_probability=1.0))
    for i in range(100):
        answer = bidder.decide(bid_request(i, floor=2.5, imps=3))
        assert answer is not None and answer["id"] == f"req-{i}"
        (seatbid,) = answer["seatbid"]
        assert seatbid["seat"] == "dsp-2"
        assert [b["impid"] for b in seatbid["bid"]] == ["imp-0", "imp-1", "imp-2"]
        assert all(b["price"] > 2.5 and b["adm"] for b in seatbid["bid"])
    ids = [b["id"] for i in range(3) for b in bidder.decide(bid_request(i))["seatbid"][0]["bid"]]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"imp": [{"id": "1"}]}, "'id'"),
        ({"id": "r", "imp": []}, "'imp'"),
        ({"id": "r", "imp": ["x"]}, "'imp[0]'"),
        ({"id": "r", "imp": [{"bidfloor": 1}]}, "'imp[0].id'"),
        ({"id": "r", "imp": [{"id": "1", "bidfloor": -1}]}, "'imp[0].bidfloor'"),
        ({"id": "r", "imp": [{"id": "1", "bidfloor": "1"}]}, "'imp[0].bidfloor'"),
        ({"id": "r", "imp": [{"id": "1"}], "tmax": "fast"}, "'tmax'"),
    ],
)
def test_malformed_bid_requests_are_rejected_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidBidRequest, match=field.replace("[", r"\[").replace("]", r"\]")):
        Bidder.seeded(0, seed=0).decide(body)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"bid_probability": 1.5}, "bid_probability"),
        ({"service_time_ms": -1}, "service_time_ms"),
        ({"price_scale": 0}, "price_scale"),
        ({"price_sigma": 9}, "price_sigma"),
    ],
)
def test_bad_settings_raise_value_error_naming_the_parameter(
    kwargs: dict[str, float], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        BidderSettings(**kwargs)


def test_set_mode_rejects_unknown_modes_and_delays_out_of_range() -> None:
    bidder = Bidder("dsp-1", random.Random(0))
    with pytest.raises(ValueError, match="mode must be one of ok, error, slow, hang"):
        bidder.set_mode("flaky", 0)
    with pytest.raises(ValueError, match="delay_ms must be in"):
        bidder.set_mode("slow", -5)


# --- over HTTP, in a real `python -m target.dsp` process ---------------------------------


def _statuses(client: httpx.Client, url: str, n: int) -> list[int]:
    return [client.post(f"{url}/bid", json=bid_request(i)).status_code for i in range(n)]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_http_bid_no_bid_sequence_follows_the_seed(log_dir: Path) -> None:
    runs = []
    for seed in (11, 11, 12):
        with DspBidders(log_dir, count=1, seed=seed) as bidders, httpx.Client(timeout=5) as c:
            runs.append(_statuses(c, bidders.urls[0], 300))
    assert set(runs[0]) == {200, 204}
    assert runs[0] == runs[1], "same seed, same request order -> same bid/no-bid sequence"
    assert runs[0] != runs[2]
    assert abs(runs[0].count(200) / 300 - 0.7) < 0.12  # default bid probability 0.7


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_http_bid_contract_200_with_seatbid_and_204_with_empty_body(
    dsp_bidders: DspBidders,
) -> None:
    seen = set()
    with httpx.Client(timeout=5) as client:
        assert client.get(f"{dsp_bidders.urls[0]}/healthz").status_code == 200
        for url, name in zip(dsp_bidders.urls, dsp_bidders.names, strict=True):
            for i in range(40):
                resp = client.post(f"{url}/bid", json=bid_request(i, floor=1.0))
                seen.add(resp.status_code)
                if resp.status_code == 204:
                    assert resp.content == b""
                    continue
                assert resp.status_code == 200
                body = resp.json()
                assert body["id"] == f"req-{i}"
                assert body["seatbid"][0]["seat"] == name
                assert body["seatbid"][0]["bid"][0]["impid"] == "imp-0"
                assert body["seatbid"][0]["bid"][0]["price"] > 1.0
    assert seen == {200, 204}


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_http_malformed_bodies_get_400_naming_the_field(dsp_bidders: DspBidders) -> None:
    url = dsp_bidders.urls[0]
    with httpx.Client(timeout=5) as client:
        resp = client.post(f"{url}/bid", content=b"{not json")
        assert resp.status_code == 400 and "JSON" in resp.json()["error"]
        resp = client.post(f"{url}/bid", json={"id": "r", "imp": [{"id": "1", "bidfloor": -2}]})
        assert resp.status_code == 400 and "imp[0].bidfloor" in resp.json()["error"]
        resp = client.post(f"{url}/control", json={"mode": "sometimes"})
        assert resp.status_code == 400 and "'mode'" in resp.json()["error"]
        resp = client.post(f"{url}/control", json={"mode": "slow", "delay_ms": 10**9})
        assert resp.status_code == 400 and "delay_ms" in resp.json()["error"]
        resp = client.post(f"{url}/control", json={"mode": "slow", "delay_ms": "soon"})
        assert resp.status_code == 400 and "delay_ms" in resp.json()["error"]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_control_error_mode_answers_503_on_that_bidder_only(dsp_bidders: DspBidders) -> None:
    first, second = dsp_bidders.urls[:2]
    with httpx.Client(timeout=5) as client:
        resp = client.post(f"{first}/control", json={"mode": "error"})
        assert resp.status_code == 200 and resp.json()["mode"] == "error"
        assert set(_statuses(client, first, 20)) == {503}
        assert set(_statuses(client, second, 20)) <= {200, 204}
        client.post(f"{first}/control", json={"mode": "ok"})
        assert set(_statuses(client, first, 20)) <= {200, 204}
        assert client.get(f"{first}/stats").json()["errors"] == 20


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_control_slow_mode_delays_answers_by_delay_ms(dsp_bidders: DspBidders) -> None:
    url = dsp_bidders.urls[0]
    with httpx.Client(timeout=10) as client:
        client.post(f"{url}/control", json={"mode": "slow", "delay_ms": 400})
        assert client.get(f"{url}/control").json() == {"mode": "slow", "delay_ms": 400}
        started = time.monotonic()
        resp = client.post(f"{url}/bid", json=bid_request())
        elapsed = time.monotonic() - started
    assert resp.status_code in (200, 204)
    assert 0.38 <= elapsed < 5


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_control_hang_mode_never_answers_until_switched_back(dsp_bidders: DspBidders) -> None:
    url = dsp_bidders.urls[0]
    with httpx.Client(timeout=5) as client:
        client.post(f"{url}/control", json={"mode": "hang"})
        with pytest.raises(httpx.ReadTimeout):
            client.post(f"{url}/bid", json=bid_request(), timeout=0.5)
        assert client.get(f"{url}/healthz").status_code == 200  # only /bid hangs
        client.post(f"{url}/control", json={"mode": "ok"})
        assert client.post(f"{url}/bid", json=bid_request()).status_code in (200, 204)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_bidders_exit_cleanly_on_sigterm_even_with_hung_requests(log_dir: Path) -> None:
    bidders = DspBidders(log_dir, count=2)
    with bidders, httpx.Client(timeout=5) as client:
        client.post(f"{bidders.urls[0]}/control", json={"mode": "hang"})
        with pytest.raises(httpx.ReadTimeout):
            client.post(f"{bidders.urls[0]}/bid", json=bid_request(), timeout=0.3)
    assert bidders.returncode == 0


@pytest.mark.integration
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "5000", "--bid-probability", "1.5"], "--bid-probability must be in [0, 1]"),
        (["--port", "70000"], "--port must be in [1, 65535]"),
        (["--port", "5000", "--port", "5000"], "--port values must be distinct"),
        ([], "--port"),
    ],
)
def test_cli_rejects_bad_arguments_with_exit_2_naming_the_option(
    args: list[str], message: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "spikegate.target.dsp", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
