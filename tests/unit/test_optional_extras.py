"""pyarrow, pandas and Polars are extras: the core imports none of them, and asking for
Arrow output or a frame without them is a clear error saying what to install."""

import subprocess
import sys

import pytest

from tickvault import frames
from tickvault.errors import NotAcceptable
from tickvault.repositories import columns


def test_the_api_cli_and_repositories_import_no_extra() -> None:
    code = (
        "import sys, tickvault.api, tickvault.cli, tickvault.repositories.market_data, "
        "tickvault.services.export, tickvault.frames; "
        "print(sorted(m for m in ('pyarrow', 'pandas', 'polars') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def test_arrow_output_without_pyarrow_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    with pytest.raises(NotAcceptable) as caught:
        columns.tick_schema()
    assert str(caught.value) == (
        "Arrow and Parquet output need pyarrow: pip install 'tickvault[arrow]'"
    )


@pytest.mark.parametrize(
    ("module", "convert", "message"),
    [
        ("pandas", frames.to_pandas, "pandas frames need pandas: pip install 'tickvault[pandas]'"),
        ("polars", frames.to_polars, "Polars frames need polars: pip install 'tickvault[polars]'"),
    ],
)
def test_frames_without_their_library_say_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, module: str, convert: object, message: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(NotAcceptable) as caught:
        convert(None)  # type: ignore[operator]
    assert str(caught.value) == message
