"""`ntklab cancel`: stop an experiment's batch jobs and interrupt its running runs."""

from ntklab.cli.common import DbOption, ExperimentArgument, HomeOption, app, existing_engine, experiment_name, out, reported


@app.command()
@reported
def cancel(
    experiment: ExperimentArgument,
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """Cancel EXPERIMENT's queued and running Slurm jobs and mark its running runs interrupted.

    Interrupted runs keep their checkpoints: `ntklab run SPEC` (or new workers) resumes them."""
    from ntklab.runner.jobs import cancel as cancel_jobs

    engine, _ = existing_engine(db, home, writable=True)
    cancelled, interrupted = cancel_jobs(engine, experiment_name(experiment))
    out.print(f"cancelled {len(cancelled)} jobs{': ' + ' '.join(cancelled) if cancelled else ''}; "
              f"{interrupted} running runs marked interrupted", highlight=False)
