import asyncio, sys, collections
from tickvault.api import create_app
async def main(url):
    app = create_app(url, simulate_rate=50)
    async with app.router.lifespan_context(app):
        mon = app.state.runtime.monitor
        mon.slow_query_log = collections.deque(maxlen=100000)
        await asyncio.sleep(5)
        log = list(mon.slow_query_log)
    print(url[:10], [(i, q.query_type, q.table_name, round(q.execution_time_ms), q.statement[:60]) for i, q in enumerate(log)])
asyncio.run(main(sys.argv[1]))
