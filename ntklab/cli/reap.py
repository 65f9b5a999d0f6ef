"""`ntklab reap`: mark the runs of dead workers interrupted, so they can be claimed and resumed.

`ntklab run` (and a worker) does this before it claims runs; read commands only report such runs.
"""

from ntklab.cli.common import DbOption, HomeOption, app, existing_engine, out, reported


@app.command()
@reported
def reap(db: DbOption = None, home: HomeOption = None) -> None:
    """Mark as interrupted the running runs whose worker is gone (its lease expired, or its process
    on this host ended); they resume from their last checkpoint when claimed again."""
    from ntklab.db import queue

    engine, _ = existing_engine(db, home, writable=True)
    marked = queue.reap(engine)
    out.print(f"{marked} runs of lost workers marked interrupted" if marked else "no lost runs", highlight=False)
