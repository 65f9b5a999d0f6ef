"""A password in a database URL, in any of the places a URL can carry one, never reaches a
message, a log, a report or a record: every command through the real CLI on PostgreSQL."""

import urllib.parse

from sqlalchemy import create_engine, text

from conftest import ntklab

SPEC = """\
name: secretive
groups:
  ok: {task: probe, steps: 3}
  broken: {task: probe, steps: 3, fail_at_step: 1}
figures:
  loss: {x: step, y: loss}
"""

USERINFO_SECRET = "Us3rinfoS3cret"
QUERY_SECRET = "Qu3ryS3cret/with&odd=chars"
SSL_SECRET = "Ss1S3cret"


def with_secrets(url: str) -> str:
    """`url` with a userinfo password and secrets as libpq query parameters (the test server trusts
    every connection, so the passwords are accepted and ignored)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.split("@")[-1]
    query = urllib.parse.urlencode({"password": QUERY_SECRET, "sslpassword": SSL_SECRET, "application_name": "t"})
    return urllib.parse.urlunsplit(
        (parts.scheme, f"ntklab:{USERINFO_SECRET}@{host}", parts.path, query, ""))


def leaked(texts: list[str]) -> list[str]:
    forms = [USERINFO_SECRET, QUERY_SECRET, urllib.parse.quote_plus(QUERY_SECRET), SSL_SECRET]
    return [f for f in forms if any(f in t for t in texts)]


def test_no_command_prints_logs_reports_or_records_a_password(home, pg_url):
    url = with_secrets(pg_url)
    (home / "s.yaml").write_text(SPEC)
    outputs = []

    def cli(*args, code=0):
        result = ntklab(*args, home=home, db=url)
        assert result.returncode == code, result.stderr
        outputs.extend([result.stdout, result.stderr])
        return result

    cli("db", "upgrade")
    assert "***" in outputs[0], "the success line names the database, masked"
    cli("plan", "s.yaml")
    cli("run", "s.yaml", code=1)
    cli("status")
    listed = cli("query", "--columns", "key,group,status", "--format", "csv")
    broken = next(line.split(",")[0] for line in listed.stdout.splitlines() if ",broken," in line)
    cli("query", "--paper", "loss")
    cli("show", broken)
    cli("logs", broken)
    cli("report", "secretive", "--output", str(home / "r.html"))
    outputs.append((home / "r.html").read_text())
    outputs.extend(p.read_text() for p in home.rglob("*.log"))
    with create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1)).connect() as conn:
        for table in ("runs", "experiments", "attempts"):
            outputs.extend(str(row) for row in conn.execute(text(f"select * from {table}")))
    assert leaked(outputs) == []

    for broken_url in (url.replace("127.0.0.1:", "127.0.0.1:9"), url.replace("/ntklab_test", "/missing_db")):
        result = ntklab("status", home=home, db=broken_url)
        assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
        assert leaked([result.stdout, result.stderr]) == [], result.stderr
