"""Every shape a secret takes in a text (URL userinfo, libpq keyword/value pairs, query parameters,
dict reprs, and the bare value of a secret this process connected with) is masked."""

import pytest

from ntklab.redaction import redact, remember_secrets


@pytest.mark.parametrize("text, masked", [
    ("postgresql+psycopg://bob:hunter22@db.example:5432/x", "postgresql+psycopg://bob:***@db.example:5432/x"),
    ("postgresql://bob:p%40ss%2Fw@[::1]:5432/x", "postgresql://bob:***@[::1]:5432/x"),
    ("postgresql://bob@h/x?sslmode=require&password=hunter22&port=1",
     "postgresql://bob@h/x?sslmode=require&password=***&port=1"),
    ("invalid dsn: host=h password='it\\'s secret' dbname=x", "invalid dsn: host=h password=*** dbname=x"),
    ("connect(host='h', password=\"hunter22\")", "connect(host='h', password=***)"),
    ("{'user': 'bob', 'password': 'hunter22'}", "{'user': 'bob', 'password': '***'}"),
    ("postgresql://h/x?sslpassword=abc&access_token=tok123", "postgresql://h/x?sslpassword=***&access_token=***"),
])
def test_every_shape_of_a_secret_is_masked(text, masked):
    assert redact(text) == masked


def test_a_remembered_secret_is_masked_wherever_it_appears():
    remember_secrets("postgresql://bob@h/x?password=Wh%40tEver99")
    assert redact("server said Wh@tEver99 or Wh%40tEver99") == "server said *** or ***"
    harmless = "run key=4f2a9c lease_seconds=60 sqlite:///tmp/a.db"
    assert redact(harmless) == harmless
