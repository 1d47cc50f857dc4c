"""WebSocket /market-data/stream: a feed handler keeps one connection open and sends ticks
without waiting for each answer.

Each message is shaped like the body of ``POST /market-data``, optionally with a ``seq``::

    → {"seq": 7, "ticks": [{"symbol": "AAPL", "timestamp": "…Z", "price": 189.2}, …]}
    ← {"seq": 7, "accepted": 1, "ids": [1042], "rejected": []}

Answers come in the order the messages were sent, each once its ticks are committed.
``rejected`` lists ``{"position", "reason"}`` for the ticks not stored; when none of a
message's ticks could be stored for a reason of the database's (unavailable, say), the answer
carries ``"error"`` too. A message that cannot be read is answered with ``"error"`` and the
connection stays open. Writes need the key on the handshake when one is configured (``X-API-Key``
or ``Authorization: Bearer``).

A message may carry a ``"key"`` (as ``Idempotency-Key`` does for ``POST /market-data``,
matched on its ticks): sent again, on this connection or another after a reconnect, it is
answered as the first time, with ``"replayed": true``, and stores nothing again.
"""

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Mapping
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from pydantic import Field, ValidationError

from tickvault.api.schemas import TickBatch
from tickvault.api.security import REFUSED, key_matches
from tickvault.errors import TickvaultError
from tickvault.services.market_data import IdempotencyKey, LiveReport, MarketDataService

router = APIRouter()
MAX_IN_FLIGHT = 1_000  # messages read but not yet answered, per connection


class StreamMessage(TickBatch):
    seq: int | str | None = Field(default=None, description="Echoed in the answer.")
    key: str | None = Field(
        default=None, min_length=1, max_length=255, description="An idempotency key."
    )


Answer = dict[str, Any] | Awaitable[LiveReport]


@router.websocket("/market-data/stream")
async def stream(websocket: WebSocket) -> None:
    runtime = websocket.app.state.runtime
    expected = runtime.settings.api_key
    await websocket.accept()  # then close with a code and reason a client can read
    if expected is not None and not key_matches(expected, websocket.headers):
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason=REFUSED)
        return
    answers: asyncio.Queue[tuple[Any, Answer]] = asyncio.Queue(MAX_IN_FLIGHT)
    sender = asyncio.create_task(_send_answers(websocket, answers))
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            seq, answer = await _take(message, runtime.market_data)
            await answers.put((seq, answer))  # waits while MAX_IN_FLIGHT are unanswered
    except WebSocketDisconnect:
        pass
    finally:
        # Ticks already queued are still written; their answers have nowhere to go.
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


async def _take(message: Mapping[str, Any], service: MarketDataService) -> tuple[Any, Answer]:
    raw = message.get("text")
    if raw is None:
        try:
            raw = (message.get("bytes") or b"").decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, _error(f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    try:
        parsed = StreamMessage.model_validate_json(raw)
    except ValidationError as exc:
        seq = _seq_of(raw)
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()
        )
        return seq, _error(reasons)
    idempotency = None
    if parsed.key is not None:
        ticks = json.dumps(parsed.ticks, sort_keys=True, separators=(",", ":"))
        idempotency = IdempotencyKey.of(parsed.key, "WS /market-data/stream", ticks.encode())
    try:
        # Waits while the write queue is full: the client's sends slow down (TCP).
        pending = await service.submit(parsed.ticks, idempotency=idempotency)
    except TickvaultError as exc:
        return parsed.seq, _error(str(exc))
    return parsed.seq, pending


def _seq_of(raw: str) -> Any:
    with contextlib.suppress(ValueError, AttributeError, RecursionError):
        seq = json.loads(raw).get("seq")
        if isinstance(seq, int | str):
            return seq
    return None


def _error(reason: str) -> dict[str, Any]:
    return {"accepted": 0, "ids": [], "rejected": [], "error": reason}


async def _send_answers(websocket: WebSocket, answers: "asyncio.Queue[tuple[Any, Answer]]") -> None:
    while True:
        seq, answer = await answers.get()
        if isinstance(answer, dict):
            body = {"seq": seq, **answer}
        else:
            try:
                report = await answer
            except TickvaultError as exc:
                body = {"seq": seq, **_error(str(exc))}
            else:
                body = {
                    "seq": seq,
                    "accepted": report.accepted,
                    "ids": report.ids,
                    "rejected": [
                        {"position": r.position, "reason": r.reason} for r in report.rejections
                    ],
                }
                if report.replayed:
                    body["replayed"] = True
        await websocket.send_text(json.dumps(body))
