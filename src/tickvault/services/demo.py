"""A demo set of instruments and alert rules, for `make run` and `tickvault simulate`.

``seed_demo`` adds what is missing and nothing else, so running it twice changes nothing.
"""

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickvault.database.engine import write_session
from tickvault.models import AlertRule, Instrument

# symbol, name, exchange, asset class, currency, a starting price
DEMO_INSTRUMENTS = (
    ("AAPL", "Apple Inc.", "XNAS", "equity", "USD", 189.50),
    ("MSFT", "Microsoft Corp.", "XNAS", "equity", "USD", 415.20),
    ("SAP", "SAP SE", "XETR", "equity", "EUR", 172.80),
    ("EURUSD", "Euro / US Dollar", "FX", "fx", "USD", 1.0850),
    ("BTCUSD", "Bitcoin / US Dollar", "CRYPTO", "crypto", "USD", 64250.00),
    ("ES", "E-mini S&P 500 future", "XCME", "future", "USD", 5230.25),
)
STARTING_PRICE = {symbol: price for symbol, *_, price in DEMO_INSTRUMENTS}


@dataclass(frozen=True)
class SeedReport:
    instruments: int
    rules: int


def demo_rules(instrument: Instrument, price: float) -> list[AlertRule]:
    """Rules a random walk from ``price`` trips now and then."""

    def rule(name: str, condition: str, threshold: float, cooldown: int) -> AlertRule:
        return AlertRule(
            name=f"{instrument.symbol} {name}",
            instrument_id=instrument.id,
            condition=condition,
            threshold=Decimal(f"{threshold:.4f}"),
            cooldown_seconds=cooldown,
        )

    return [
        rule("up 0.5%", "price_above", price * 1.005, 60),
        rule("down 0.5%", "price_below", price * 0.995, 60),
        rule("jump 0.15%", "pct_change_above", 0.15, 30),
        rule("block trade", "volume_above", 950, 30),
    ]


async def seed_demo(session_factory: async_sessionmaker[AsyncSession]) -> SeedReport:
    """Add the demo instruments that are missing, each with its demo rules."""
    async with write_session(session_factory) as session:
        existing = set(await session.scalars(select(Instrument.symbol)))
        added: list[tuple[Instrument, float]] = []
        for symbol, name, exchange, asset_class, currency, price in DEMO_INSTRUMENTS:
            if symbol in existing:
                continue
            instrument = Instrument(
                symbol=symbol,
                name=name,
                exchange=exchange,
                asset_class=asset_class,
                currency=currency,
            )
            session.add(instrument)
            added.append((instrument, price))
        await session.flush()
        rules = [r for instrument, price in added for r in demo_rules(instrument, price)]
        session.add_all(rules)
    return SeedReport(instruments=len(added), rules=len(rules))
