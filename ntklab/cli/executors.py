"""`ntklab run --executor local|slurm`: the options, and handing a recorded plan to workers."""

from enum import Enum
from typing import Annotated, Optional

import typer

from ntklab.cli.common import (EXIT_FAILED_RUNS, SIGNAL_EXIT, database_url, err, finite_between, open_home_engine,
                               out)
from ntklab.errors import UsageError


class ExecutorKind(str, Enum):
    local = "local"
    slurm = "slurm"


_SLURM = "Slurm (with --executor slurm; defaults: the spec's executor.slurm)"

ExecutorOption = Annotated[Optional[ExecutorKind], typer.Option(
    "--executor", help="hand the runs to workers: N processes here, or a Slurm job array "
    "(default: the spec's `executor:`, else this process executes them)")]
WorkersOption = Annotated[Optional[int], typer.Option("--workers", min=1, help="how many workers the executor starts")]
DevicesOption = Annotated[Optional[str], typer.Option(
    "--devices", help="local workers: accelerators, one per worker in turn (CUDA_VISIBLE_DEVICES values: 0,1,2,3)")]
PartitionOption = Annotated[Optional[str], typer.Option("--partition", rich_help_panel=_SLURM)]
AccountOption = Annotated[Optional[str], typer.Option("--account", rich_help_panel=_SLURM)]
QosOption = Annotated[Optional[str], typer.Option("--qos", rich_help_panel=_SLURM)]
TimeOption = Annotated[Optional[int], typer.Option(
    "--time", min=1, metavar="MINUTES", help="each job's time limit", rich_help_panel=_SLURM)]
CpusOption = Annotated[Optional[int], typer.Option("--cpus-per-task", min=1, rich_help_panel=_SLURM)]
MemOption = Annotated[Optional[float], typer.Option("--mem-gb", callback=finite_between(0.001, 1e6, " of GB"),
                                                    help="memory per job", rich_help_panel=_SLURM)]
GpusOption = Annotated[Optional[int], typer.Option("--gpus-per-task", min=0, rich_help_panel=_SLURM)]
SetupOption = Annotated[Optional[list[str]], typer.Option(
    "--setup", help="a shell line each job runs first, e.g. 'module load cuda' (repeatable)", rich_help_panel=_SLURM)]
AllowSqliteOption = Annotated[bool, typer.Option(
    "--allow-sqlite", help="let Slurm workers use SQLite: only for one node with the home on a local disk",
    rich_help_panel=_SLURM)]
WaitOption = Annotated[bool, typer.Option("--wait", help="follow the Slurm jobs until they end", rich_help_panel=_SLURM)]


def executor_config(declared, kind: ExecutorKind | None, workers, devices, slurm: dict):
    """The spec's `executor:` block with the command line's choices on top; None: no executor."""
    from pydantic import ValidationError

    from ntklab.spec.executor import ExecutorConfig

    if declared is None and kind is None:
        if workers is not None or devices is not None or any(v is not None for v in slurm.values()):
            raise UsageError("--workers, --devices and the Slurm options go with an executor: "
                             "--executor local or --executor slurm (or an `executor:` block in the spec)")
        return None
    data = declared.model_dump() if declared is not None else {}
    if kind is not None:
        data["kind"] = kind.value
    if workers is not None:
        data["workers"] = workers
    if devices is not None:
        data["devices"] = [d.strip() for d in devices.split(",") if d.strip()]
    data["slurm"] = {**data.get("slurm", {}), **{k: v for k, v in slurm.items() if v is not None}}
    try:
        return ExecutorConfig.model_validate(data)
    except ValidationError as error:
        problem = error.errors()[0]
        raise UsageError(f"executor.{'.'.join(map(str, problem['loc']))}: {problem['msg']}") from None


def hand_off(plan, chosen, options, db, home, *, allow_sqlite: bool, wait: bool):
    """Record the plan's runs, then start its workers. Returns the engine and the outcome of the
    runs once the workers ended, or None for Slurm jobs not waited for."""
    from ntklab.runner.execute import enqueue_plan
    from ntklab.runner.worker import WorkResult, final_statuses

    url = database_url(db, home)
    if chosen.kind == "slurm":
        from ntklab.runner.slurm import check_database

        check_database(url, allow_sqlite)
    engine, store = open_home_engine(db, home, create=True)
    enqueue_plan(engine, plan, options, store)
    worker_args = [plan.name, "--lease-seconds", str(options.lease.total_seconds())]
    stopped_by = None
    if chosen.kind == "local":
        from ntklab.runner.local import start_workers, wait_for_workers

        started = start_workers(worker_args, chosen.workers, chosen.devices, db_url=url, home=store.root,
                                label=plan.name)
        err.print(f"started {len(started)} local workers; their logs: {started[0].log.parent}", highlight=False)
        codes, stopped_by = wait_for_workers(started)
        for worker, code in zip(started, codes):
            if code not in (0, EXIT_FAILED_RUNS, *SIGNAL_EXIT.values()):
                err.print(f"worker {worker.index} exited {code}: see {worker.log}", style="red", highlight=False)
    else:
        from ntklab.runner.slurm import follow, submit

        jobs = submit(engine, plan.name, chosen.workers, chosen.slurm, db_url=url, home=store.root,
                      lease_seconds=options.lease.total_seconds())
        out.print(f"submitted {len(jobs)} Slurm jobs for {plan.name}: {' '.join(jobs)}", highlight=False)
        if not wait:
            err.print(f"watch them with `ntklab status {plan.name}`, stop them with `ntklab cancel {plan.name}`",
                      style="dim", highlight=False)
            return engine, None
        follow(engine, plan.name, jobs, lambda line: err.print(line, highlight=False))
    return engine, WorkResult(stopped_by=stopped_by, final=final_statuses(engine, plan))
