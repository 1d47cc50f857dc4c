"""The baseline of ``tickvault bench``'s HTTP case: a FastAPI endpoint that parses the same
body as ``POST /market-data`` (the same request model) and stores nothing. What tickvault
costs on top of it is the price of storing the tick.

Run by the bench as ``python -m uvicorn tickvault.bench.bare:app``.
"""

from fastapi import FastAPI

from tickvault.api.schemas import IngestResult, TickBatch

app = FastAPI()


@app.post("/market-data")
async def post_ticks(body: TickBatch) -> IngestResult:
    return IngestResult(accepted=len(body.ticks), rejected=0, alerts=0, rejections=[])
