"""Wire models: the OpenRTB 2.x subset the target speaks, and the impression notice.

Inbound models validate strictly enough that a malformed body is a 422 naming the field;
outbound bid responses are built as plain dicts on the hot path (see `bid_response`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_ID = Field(min_length=1, max_length=256)


class _In(BaseModel):
    # Unknown OpenRTB fields are allowed and ignored: partners send far more than we read.
    model_config = ConfigDict(extra="ignore")


class Imp(_In):
    id: str = _ID
    bidfloor: float = Field(default=0.0, ge=0, le=1_000_000, allow_inf_nan=False)


class Publisher(_In):
    id: str = _ID


class Site(_In):
    publisher: Publisher


class User(_In):
    id: str = _ID


class BidRequest(_In):
    """OpenRTB 2.x subset: request id, impressions with floors, publisher, user, tmax (ms)."""

    id: str = _ID
    imp: list[Imp] = Field(min_length=1, max_length=64)
    site: Site
    user: User
    tmax: int | None = Field(
        default=None, ge=1, le=60_000, description="ms; defaults to auction.default_tmax_ms"
    )


class Bid(BaseModel):
    id: str
    impid: str
    price: float
    adm: str = ""


class SeatBid(BaseModel):
    seat: str
    bid: list[Bid]


class BidResponse(BaseModel):
    """200 body: the winning bid (documentation model; the route writes the dict directly)."""

    id: str
    seatbid: list[SeatBid]
    cur: str = "USD"


class Impression(_In):
    """The win/impression notice; `impression_id` is unique (counted by id downstream)."""

    impression_id: str = _ID
    request_id: str = _ID
    bid_id: str = _ID
    publisher_id: str = _ID
    dsp: str = _ID
    price: float = Field(ge=0, le=1_000_000, allow_inf_nan=False)


class ErrorBody(BaseModel):
    """Body of every designed rejection (401/403/429/503)."""

    decision: str
    detail: str


class ImpressionAck(BaseModel):
    impression_id: str
    decision: str


def bid_response(request_id: str, seat: str, bid: dict[str, Any]) -> dict[str, Any]:
    return {"id": request_id, "seatbid": [{"seat": seat, "bid": [bid]}], "cur": "USD"}
