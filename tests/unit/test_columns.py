"""Arrow columns hold the numbers the JSON API writes: every price rounded exactly as
``round(x, 4)`` rounds it, ties and near-ties included; and the Accept header picks the
answer's type as RFC 9110 says, or a 406 that lists what the endpoint gives."""

import math

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickvault.api.negotiation import negotiate
from tickvault.errors import NotAcceptable
from tickvault.repositories.columns import round4

# Values a float-multiply-then-round gets wrong: ties in decimal that are not ties in
# binary (x.xxxx5), products a hair off an integer, huge and tiny magnitudes.
HOSTILE = [
    3701766.77475, 93580.07325, -18137.01365, 1.00005, 0.00005, -0.00005, 2.675, 1.23455,
    -16225.121000000001, -7305.853300000001, 101.12340000000001, 99999999.9999,
    -99999999.9999, 1e-20, -1e-20, 0.0, -0.0, 123456789012.34565, 2.0**53, 1e300,
]  # fmt: skip


def _same(got: list[float | None], expected: list[float | None]) -> bool:
    return all(
        (a is None and b is None)
        or (a is not None and b is not None and (a == b or (math.isnan(a) and math.isnan(b))))
        for a, b in zip(got, expected, strict=True)
    )


def test_hostile_prices_round_as_python_rounds_them() -> None:
    got = round4(pa.array(HOSTILE, pa.float64())).to_pylist()
    assert got == [round(value, 4) for value in HOSTILE]
    assert got[:3] == [3701766.7747, 93580.0733, -18137.0137]
    assert got[8] == -16225.121
    # What pyarrow.compute.round gives for the same: a tie broken the other way, and a
    # quotient one unit in the last place off.
    naive = pc.round(pa.array(HOSTILE, pa.float64()), 4).to_pylist()
    assert naive[:3] == [3701766.7748, 93580.0732, -18137.0136]
    assert naive[8] == -16225.121000000001


def test_missing_and_non_finite_prices_stay_as_they_are() -> None:
    values = [None, math.inf, -math.inf, math.nan, 1.23456]
    got = round4(pa.array(values, pa.float64())).to_pylist()
    assert _same(got, [None, math.inf, -math.inf, math.nan, 1.2346])


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.floats(-1e12, 1e12),
            st.integers(-(10**13), 10**13).map(lambda n: n / 10**5),  # 5 decimals: ties
            st.integers(-(10**12), 10**12).map(lambda n: n / 10**4),
        ),
        max_size=50,
    )
)
def test_any_price_rounds_as_python_rounds_it(values: list[float | None]) -> None:
    got = round4(pa.array(values, pa.float64())).to_pylist()
    assert got == [None if v is None else round(v, 4) for v in values]


ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/*", "application/json"),
        ("application/json", "application/json"),
        (ARROW, ARROW),
        (f"{PARQUET}", PARQUET),
        (f"text/html, {ARROW};q=0.9, application/json;q=0.5", ARROW),
        (f"{ARROW};q=0.2, {PARQUET};q=0.8", PARQUET),
        (f"{ARROW}, */*;q=0.1", ARROW),
        ("APPLICATION/VND.APACHE.ARROW.STREAM ; Q=1", ARROW),
        ("application/json;q=0, application/*", ARROW),  # the specific range excludes JSON
        ("text/html, */*;q=0.01", "application/json"),
    ],
)
def test_accept_picks_the_preferred_type(accept: str | None, chosen: str) -> None:
    assert negotiate(accept) == chosen


@pytest.mark.parametrize(
    "accept",
    ["text/html", "text/csv, image/*", "application/json;q=0", f"{ARROW};q=nan", "nonsense"],
)
def test_an_accept_the_endpoint_cannot_give_says_what_it_gives(accept: str) -> None:
    with pytest.raises(NotAcceptable) as caught:
        negotiate(accept)
    assert str(caught.value) == (
        f"cannot answer with any type of Accept: {accept}; this endpoint answers "
        f"application/json, {ARROW} or {PARQUET}"
    )
