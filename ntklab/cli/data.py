"""`ntklab data`: the official dataset files (logic in ntklab/data/fetch.py)."""

from typing import Annotated, Optional

import typer

from ntklab.cli.common import (CONTEXT, EXIT_EPILOG, DataRootOption, FormatOption, OutputFormat, app, err, out,
                               reported, styled)

data_app = typer.Typer(no_args_is_help=True, context_settings=CONTEXT, epilog=EXIT_EPILOG,
                       help="Dataset files: download the official files and verify them.")
app.add_typer(data_app, name="data")


@data_app.command("fetch")
@reported
def data_fetch(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="mnist, fashion_mnist, kmnist, cifar10, cifar100, svhn")],
    root: DataRootOption = None,
    mirror: Annotated[Optional[str], typer.Option("--mirror", metavar="URL", help="base URL laid out as <mirror>/<dataset>/<file> (default: NTKLAB_DATA_MIRROR, else the official sites)")] = None,
    retries: Annotated[int, typer.Option(metavar="N", help="attempts per location after a dropped connection (each resumes)")] = 3,
) -> None:
    """Download datasets from their official sites, resumably, each file verified by its official checksum.

    Files already present and valid are kept; an interrupted download resumes where it stopped."""
    from ntklab.data.fetch import RichProgress, fetch

    for name in names:
        results = fetch(name, root, mirror=mirror, retries=retries, progress=RichProgress(err))
        counts = {a: sum(r.action == a for r in results) for a in ("downloaded", "resumed", "present")}
        where = results[0].path.parent if results else root
        out.print(f"{name}: {len(results)} files verified in {where} ("
                  + ", ".join(f"{n} {a}" for a, n in counts.items() if n) + ")", highlight=False)


@data_app.command("list")
@reported
def data_list(root: DataRootOption = None, format_: FormatOption = OutputFormat.table) -> None:
    """Which datasets are present and valid under the data root (every file is checksummed)."""
    from ntklab.data.fetch import list_datasets
    from ntklab.tabular import emit

    rows = list_datasets(root)
    emit(["dataset", "state", "form", "directory"], [[r.name, r.state, r.forms, str(r.directory)] for r in rows],
         format_.value, out)
    if format_ == OutputFormat.table:
        for row in rows:
            if row.state in ("corrupt", "incomplete"):
                for problem in row.problems:
                    err.print(styled(row.name, "yellow", problem), highlight=False)
