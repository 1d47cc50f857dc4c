"""``tickvault bench``: measure the original performance claims on throwaway databases."""

import dataclasses
import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tickvault.bench import report
from tickvault.bench.run import BenchConfig, run, steps
from tickvault.cli._common import console, friendly_errors


def bench(
    postgres_url: Annotated[
        str | None,
        typer.Option(
            envvar="TICKVAULT_BENCH_POSTGRES_URL",
            help="A PostgreSQL server where the user may create databases (each case gets "
            "throwaway ones). Without it PostgreSQL is skipped, and the report says so.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[Path, typer.Option(help="Folder for bench.json and bench.png.")] = Path(
        "bench-results"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes: a smoke test, not a measurement.")
    ] = False,
    rows: Annotated[int, typer.Option(help="Rows in each table before inserting.", min=1)] = (
        1_000_000
    ),
    single: Annotated[int, typer.Option(help="One-row inserts per case.", min=2)] = 2_000,
    bulk: Annotated[int, typer.Option(help="Rows per bulk insert.", min=1)] = 1_000_000,
    repeat: Annotated[int, typer.Option(help="Repeats of each case (median).", min=1)] = 3,
    load_seconds: Annotated[
        float, typer.Option(help="Seconds per concurrent-writer run.", min=0.1)
    ] = 10.0,
    only_load: Annotated[
        bool,
        typer.Option(
            "--only-load", help="Only the load part (the live write path), on a head database."
        ),
    ] = False,
) -> None:
    """Measure INSERT and read cost per revision, DECIMAL vs FLOAT, and concurrent load."""
    config = (
        BenchConfig.quick(postgres_url)
        if quick
        else BenchConfig(postgres_url, rows, single, bulk, repeat, load_seconds=load_seconds)
    )
    config = dataclasses.replace(config, only_load=only_load)
    out = console()
    if not out.is_terminal:
        out.width = 240  # wide tables, never wrapped to a pipe's default 80 columns
    logging.getLogger("alembic").setLevel(logging.WARNING)  # each fill migrates: say less
    if not postgres_url:
        out.print("PostgreSQL skipped: no --postgres-url (or TICKVAULT_BENCH_POSTGRES_URL)")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=steps(config))

        def step(description: str) -> None:
            progress.update(task, description=description, advance=1)
            if not out.is_terminal:
                out.print(description)

        results = run(config, step)
    for engine, figures in results["engines"].items():
        if "skipped" in figures:
            out.print(f"{engine}: skipped ({figures['skipped']})")
            continue
        if not only_load:
            out.print(report.claims_table(engine, figures))
        out.print(report.load_table(engine, figures))
        out.print(report.live_table(engine, figures))
    os.makedirs(output, exist_ok=True)
    report.write_json(results, output / "bench.json")
    charted = not only_load and report.write_chart(results, output / "bench.png")
    out.print(
        f"results: {output / 'bench.json'}" + (f", {output / 'bench.png'}" if charted else "")
    )


def register(app: typer.Typer) -> None:
    app.command()(friendly_errors(bench))
