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
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from time import perf_counter

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickvault.database.bulk import TickRecord
from tickvault.database.engine import write_session
from tickvault.models import AlertLog, AlertRule, MarketData


@dataclass
class _RuleState:
    firing: bool
    last_fired: datetime | None


def _observed(rule: AlertRule, tick: TickRecord, previous: float | None) -> float | None:
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


def _met(rule: AlertRule, value: float) -> bool:
    threshold = float(rule.threshold)
    return value < threshold if rule.condition.endswith("_below") else value > threshold


class AlertService:
    """Keeps each rule's state between batches; one instance per feed."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.session_factory = session_factory
        self._states: dict[int, _RuleState] = {}
        self._last_price: dict[int, float] = {}

    async def evaluate(self, ticks: Sequence[TickRecord]) -> list[AlertLog]:
        """Check ``ticks`` (already stored, in time order) and write what fired or cleared."""
        instrument_ids = {tick[0] for tick in ticks}
        logs: list[AlertLog] = []
        async with write_session(self.session_factory) as session:
            rules = list(
                await session.scalars(
                    select(AlertRule)
                    .where(AlertRule.is_active, AlertRule.instrument_id.in_(sorted(instrument_ids)))
                    .order_by(AlertRule.id)
                )
            )
            if not rules:
                self._remember_prices(ticks)
                return []
            await self._seed(session, rules, ticks)
            by_instrument: dict[int, list[AlertRule]] = {}
            for rule in rules:
                by_instrument.setdefault(rule.instrument_id, []).append(rule)
            for tick in ticks:
                previous = self._last_price.get(tick[0])
                for rule in by_instrument.get(tick[0], ()):
                    log = self._check(rule, tick, previous)
                    if log is not None:
                        logs.append(log)
                if tick[2] is not None:
                    self._last_price[tick[0]] = tick[2]
            session.add_all(logs)
        return logs

    def _check(self, rule: AlertRule, tick: TickRecord, previous: float | None) -> AlertLog | None:
        started = perf_counter()
        value = _observed(rule, tick, previous)
        if value is None:
            return None
        state = self._states[rule.id]
        timestamp = tick[1]
        met = _met(rule, value)
        cooled = state.last_fired is None or timestamp - state.last_fired >= timedelta(
            seconds=rule.cooldown_seconds
        )
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
        threshold = float(rule.threshold)
        return AlertLog(
            rule_id=rule.id,
            instrument_id=rule.instrument_id,
            timestamp=timestamp,
            trigger_value=round(value, 4),
            threshold_value=threshold,
            fired_status=status,
            evaluation_time_ms=(perf_counter() - started) * 1000,
            message=f"{rule.name}: {rule.condition} {value:.4f} vs {threshold:.4f} ({status})",
        )

    async def _seed(
        self, session: AsyncSession, rules: list[AlertRule], ticks: Sequence[TickRecord]
    ) -> None:
        """Learn the state of rules and instruments seen for the first time, from the database."""
        new_rules = [rule for rule in rules if rule.id not in self._states]
        if new_rules:
            fired = dict(
                (
                    await session.execute(
                        select(AlertLog.rule_id, func.max(AlertLog.timestamp))
                        .where(
                            AlertLog.rule_id.in_([r.id for r in new_rules]),
                            AlertLog.fired_status == "fired",
                        )
                        .group_by(AlertLog.rule_id)
                    )
                ).all()
            )
            last_status = {}
            for rule in new_rules:
                last_status[rule.id] = await session.scalar(
                    select(AlertLog.fired_status)
                    .where(AlertLog.rule_id == rule.id)
                    .order_by(AlertLog.timestamp.desc(), AlertLog.id.desc())
                    .limit(1)
                )
                self._states[rule.id] = _RuleState(
                    firing=last_status[rule.id] in ("fired", "suppressed"),
                    last_fired=fired.get(rule.id),
                )
        first_seen: dict[int, datetime] = {}
        for tick in ticks:
            if tick[0] not in self._last_price and tick[0] not in first_seen:
                first_seen[tick[0]] = tick[1]
        for instrument_id, first in first_seen.items():
            before = await session.scalar(
                select(MarketData.price)
                .where(
                    MarketData.instrument_id == instrument_id,
                    MarketData.timestamp < first,
                    MarketData.price.is_not(None),
                )
                .order_by(MarketData.timestamp.desc(), MarketData.id.desc())
                .limit(1)
            )
            if before is not None:
                self._last_price[instrument_id] = before

    def _remember_prices(self, ticks: Sequence[TickRecord]) -> None:
        for tick in ticks:
            if tick[2] is not None:
                self._last_price[tick[0]] = tick[2]
