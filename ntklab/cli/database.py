"""`ntklab db`: database administration."""

from ntklab.cli.common import DbOption, HomeOption, db_app, open_home_engine, out, reported


@db_app.command("upgrade")
@reported
def db_upgrade(db: DbOption = None, home: HomeOption = None) -> None:
    """Create or migrate the database schema to this version of ntklab."""
    from ntklab.db.schema import upgrade
    from ntklab.redaction import redact

    engine, _ = open_home_engine(db, home, create=False)
    before, after = upgrade(engine)
    out.print(f"{redact(engine.url.render_as_string(hide_password=False))}: schema "
              + (f"already at {after}" if before == after else f"{before or 'empty'} -> {after}"), highlight=False)
