"""Alert rules evaluated on incoming ticks, with cooldowns, logged to alert_logs.

For each active rule of a tick's instrument, the rule's condition is checked:

- ``price_above`` / ``price_below``: the tick's price against the threshold;
- ``pct_change_above`` / ``pct_change_below``: percent change from the instrument's previous
  price (the previous tick in the stream, or the latest stored one before it);
- ``spread_above``: ask - bid; ``volume_above``: the tick's volume.

A condition that becomes true fires (``fired``), unless the rule fired less than
``cooldown_seconds`` before, in which case it is logged as ``suppressed``. While it stays true
it fires again once per cooldown. When it stops being true it is logged ``cleared``. Fired
alerts start with ``delivery_status = pending``.

The live writer evaluates a batch first (``prepare``) and writes its logs in the
transaction that stores its ticks; if that transaction does not commit, ``AlertRun.undo``
takes the rules' state back, so a tick that was not stored leaves no trace in any rule. Active rules
are cached in the process: ``invalidate()`` after changing one here (the next evaluation
reloads them); changes made by other processes are picked up in the background, within
about ``RULES_TTL_SECONDS``.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from time import perf_counter
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from tickvault.database.bulk import TickRecord
from tickvault.database.engine import write_transaction
from tickvault.models import AlertLog, AlertRule, MarketData

ALERT_LOGS: Table = AlertLog.__table__  # type: ignore[assignment]
RULES_TTL_SECONDS = 2.0


@dataclass(frozen=True)
class Rule:
    id: int
    name: str
    instrument_id: int
    condition: str
    threshold: float
    cooldown: timedelta


@dataclass
class _RuleState:
    firing: bool
    last_fired: datetime | None


@dataclass
class AlertRun:
    """What one evaluation wrote: ``logs`` (alert_logs rows) and ``per_tick`` (how many of
    them each tick of the batch caused). ``undo()`` takes the rules' state back to before."""

    logs: list[dict[str, Any]] = field(default_factory=list)
    per_tick: list[int] = field(default_factory=list)
    undo: Callable[[], None] = lambda: None


async def _cancel(task: "asyncio.Task[None] | None") -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _observed(rule: Rule, tick: TickRecord, previous: float | None) -> float | None:
    """The value the rule looks at, or None when the tick does not carry it."""
    price, bid, ask, volume = tick[2], tick[3], tick[4], tick[8]
    condition = rule.condition
    if condition in ("price_above", "price_below"):
        return price
    if condition in ("pct_change_above", "pct_change_below"):
        if price is None or previous is None or previous == 0:
            return None
        return (price - previous) / abs(previous) * 100
    if condition == "spread_above":
        return ask - bid if ask is not None and bid is not None else None
    if condition == "volume_above":
        return float(volume) if volume is not None else None
    return None


def _met(rule: Rule, value: float) -> bool:
    return value < rule.threshold if rule.condition.endswith("_below") else value > rule.threshold


class AlertService:
    """Keeps each rule's state between batches; one instance per feed."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.session_factory = session_factory
        engine = session_factory.kw.get("bind")
        if not isinstance(engine, AsyncEngine):
            raise TypeError("AlertService needs a session factory bound to an AsyncEngine")
        self.engine: AsyncEngine = engine
        self._states: dict[int, _RuleState] = {}
        self._last_price: dict[int, float] = {}
        self._seen: set[int] = set()  # instruments whose previous price was looked up
        self._rules: dict[int, list[Rule]] = {}
        self._rules_loaded_at: float | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._generation = 0  # bumped by invalidate()

    def invalidate(self) -> None:
        """Reload the active rules before the next evaluation (call after changing one)."""
        self._rules_loaded_at = None
        self._generation += 1

    async def aclose(self) -> None:
        """Stop a background reload of the rules, if one runs."""
        await _cancel(self._refresh)

    async def evaluate(self, ticks: Sequence[TickRecord]) -> int:
        """Check ``ticks`` (already stored, in time order) and write what fired or cleared,
        in a transaction of their own; how many alert logs were written."""
        run = await self.prepare(ticks)
        try:
            if run.logs:
                async with write_transaction(self.engine) as connection:
                    await connection.execute(insert(ALERT_LOGS), run.logs)
        except BaseException:
            run.undo()
            raise
        return len(run.logs)

    async def prepare(self, ticks: Sequence[TickRecord]) -> AlertRun:
        """Check ``ticks`` (in the order they arrived) and return the alert logs to write,
        without writing them: the caller writes them with the ticks, in one transaction,
        and calls ``undo()`` if that transaction does not commit. Reads the database only
        to refresh the cached rules and to learn about rules and instruments new to it."""
        instruments = {tick[0] for tick in ticks}
        rules = self._relevant(instruments)
        loaded = self._rules_loaded_at
        if loaded is None or self._unseen(rules, instruments):
            async with self.engine.connect() as connection:
                if loaded is None:
                    await self._load_rules(connection)
                    rules = self._relevant(instruments)
                await self._seed(connection, rules, ticks)
        elif time.monotonic() - loaded >= RULES_TTL_SECONDS and (
            self._refresh is None or self._refresh.done()
        ):
            # Other processes' rule changes, in the background: no batch waits for them.
            self._refresh = asyncio.create_task(self._reload_rules(), name="tickvault-rules")
        run = AlertRun(undo=self._snapshot(rules, instruments))
        for tick in ticks:
            previous = self._last_price.get(tick[0])
            before = len(run.logs)
            for rule in self._rules.get(tick[0], ()):
                log = self._check(rule, tick, previous)
                if log is not None:
                    run.logs.append(log)
            run.per_tick.append(len(run.logs) - before)
            if tick[2] is not None:
                self._last_price[tick[0]] = tick[2]
        return run

    def _relevant(self, instruments: set[int]) -> list[Rule]:
        return [rule for i in instruments for rule in self._rules.get(i, ())]

    def _unseen(self, rules: list[Rule], instruments: set[int]) -> bool:
        if not rules:
            return False
        return any(rule.id not in self._states for rule in rules) or not self._seen.issuperset(
            instruments
        )

    def _snapshot(self, rules: list[Rule], instruments: set[int]) -> Callable[[], None]:
        states = {
            rule.id: _RuleState(state.firing, state.last_fired)
            for rule in rules
            if (state := self._states.get(rule.id)) is not None
        }
        prices = {i: self._last_price.get(i) for i in instruments}

        def undo() -> None:
            self._states.update(states)
            for instrument_id, price in prices.items():
                if price is None:
                    self._last_price.pop(instrument_id, None)
                else:
                    self._last_price[instrument_id] = price

        return undo

    async def _reload_rules(self) -> None:
        generation = self._generation
        try:
            async with self.engine.connect() as connection:
                await self._load_rules(connection, unless_invalidated_since=generation)
        except Exception:
            # The database is away: keep the rules we have, try again in RULES_TTL_SECONDS.
            self._rules_loaded_at = time.monotonic()

    async def _load_rules(
        self, connection: AsyncConnection, *, unless_invalidated_since: int | None = None
    ) -> None:
        now = time.monotonic()
        rows = await connection.execute(
            select(
                AlertRule.id,
                AlertRule.name,
                AlertRule.instrument_id,
                AlertRule.condition,
                AlertRule.threshold,
                AlertRule.cooldown_seconds,
            )
            .where(AlertRule.is_active)
            .order_by(AlertRule.id)
        )
        rules: dict[int, list[Rule]] = {}
        for id_, name, instrument_id, condition, threshold, cooldown in rows:
            rule = Rule(
                id_,
                name,
                instrument_id,
                condition,
                float(Decimal(threshold)),
                timedelta(seconds=cooldown),
            )
            rules.setdefault(instrument_id, []).append(rule)
        if unless_invalidated_since not in (None, self._generation):
            return  # invalidated while this ran: the next evaluation reloads
        self._rules, self._rules_loaded_at = rules, now

    def _check(self, rule: Rule, tick: TickRecord, previous: float | None) -> dict[str, Any] | None:
        started = perf_counter()
        value = _observed(rule, tick, previous)
        if value is None:
            return None
        state = self._states[rule.id]
        timestamp = tick[1]
        met = _met(rule, value)
        cooled = state.last_fired is None or timestamp - state.last_fired >= rule.cooldown
        if met and (not state.firing or cooled):
            status = "fired" if cooled else "suppressed"
            if cooled:
                state.last_fired = timestamp
        elif not met and state.firing:
            status = "cleared"
        else:
            state.firing = met
            return None
        state.firing = met
        return {
            "rule_id": rule.id,
            "instrument_id": rule.instrument_id,
            "timestamp": timestamp,
            "trigger_value": round(value, 4),
            "threshold_value": rule.threshold,
            "fired_status": status,
            "evaluation_time_ms": (perf_counter() - started) * 1000,
            "message": (
                f"{rule.name}: {rule.condition} {value:.4f} vs {rule.threshold:.4f} ({status})"
            ),
        }

    async def _seed(
        self, connection: AsyncConnection, rules: list[Rule], ticks: Sequence[TickRecord]
    ) -> None:
        """Learn the state of rules and instruments seen for the first time, from the database."""
        new_rules = [rule for rule in rules if rule.id not in self._states]
        if new_rules:
            for rule in new_rules:
                # Two backward probes of ix_alert_logs_rule_timestamp per rule. (One
                # max(timestamp) ... GROUP BY over all new rules picked the fired_status index
                # and read every fired log, for each batch of rules new to the writer.)
                live_logs = select(AlertLog.fired_status, AlertLog.timestamp).where(
                    AlertLog.rule_id == rule.id, AlertLog.deleted_at.is_(None)
                )
                last_status = await connection.scalar(
                    live_logs.order_by(AlertLog.timestamp.desc(), AlertLog.id.desc()).limit(1)
                )
                last_fired = (
                    await connection.execute(
                        live_logs.where(AlertLog.fired_status == "fired")
                        .order_by(AlertLog.timestamp.desc())
                        .limit(1)
                    )
                ).first()
                self._states[rule.id] = _RuleState(
                    firing=last_status in ("fired", "suppressed"),
                    last_fired=last_fired.timestamp if last_fired is not None else None,
                )
        first_seen: dict[int, datetime] = {}
        for tick in ticks:
            if tick[0] not in self._seen and tick[0] not in first_seen:
                first_seen[tick[0]] = tick[1]
        for instrument_id, first in first_seen.items():
            before = await connection.scalar(
                select(MarketData.price)
                .where(
                    MarketData.instrument_id == instrument_id,
                    MarketData.timestamp < first,
                    MarketData.price.is_not(None),
                    MarketData.deleted_at.is_(None),
                )
                .order_by(MarketData.timestamp.desc(), MarketData.id.desc())
                .limit(1)
            )
            if before is not None and instrument_id not in self._last_price:
                self._last_price[instrument_id] = before
        self._seen.update(first_seen)
