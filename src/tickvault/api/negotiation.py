"""Which media type answers a request: its ``Accept`` header against what a route offers.

Each offered type gets the quality of the most specific range that names it (``type/sub``
before ``type/*`` before ``*/*``, RFC 9110 section 12.5.1); the highest quality above zero
wins, ties going to the route's first offer (JSON). No ``Accept`` means JSON; none that a
route can give is a ``NotAcceptable`` (406) that lists what it can.
"""

import math

from tickvault.errors import NotAcceptable
from tickvault.services.export import ARROW_STREAM, PARQUET

JSON = "application/json"
COLUMNAR = (JSON, ARROW_STREAM, PARQUET)


def _ranges(accept: str) -> list[tuple[str, float]]:
    """``"a/b;q=0.5, */*"`` → [("a/b", 0.5), ("*/*", 1.0)]; a malformed q counts as 0."""
    ranges = []
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        if "/" not in media:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
                if not (math.isfinite(quality) and 0.0 <= quality <= 1.0):
                    quality = 0.0
        ranges.append((media.lower(), quality))
    return ranges


def _quality(offer: str, ranges: list[tuple[str, float]]) -> float:
    kind = offer.split("/")[0]
    for pattern in (offer, f"{kind}/*", "*/*"):
        matching = [quality for media, quality in ranges if media == pattern]
        if matching:
            return max(matching)
    return 0.0


def negotiate(accept: str | None, offers: tuple[str, ...] = COLUMNAR) -> str:
    """The media type of ``offers`` that ``accept`` prefers."""
    if accept is None or not accept.strip():
        return offers[0]
    ranges = _ranges(accept)
    best, best_quality = None, 0.0
    for offer in offers:
        quality = _quality(offer, ranges)
        if quality > best_quality:
            best, best_quality = offer, quality
    if best is None:
        raise NotAcceptable(
            f"cannot answer with any type of Accept: {accept.strip()[:200]}; this endpoint "
            f"answers {', '.join(offers[:-1])} or {offers[-1]}"
        )
    return best
