"""`iracdb sql --format csv` writes values as the exports and `summary` do: NULL as an empty field, booleans as
``true``/``false`` (PostgreSQL gives them as booleans; SQLite has no boolean type and gives 0 or 1)."""

from __future__ import annotations

from typer.testing import CliRunner

from iracdb.cli import app

runner = CliRunner()

#: A boolean of each value, a NULL boolean, a float and a text, by backend (SQLite's booleans are integers).
QUERIES = {
    "postgresql": "SELECT true AS yes, false AS no, NULL::boolean AS unknown, 1.5::float8 AS x, 'a,b' AS t",
    "sqlite": "SELECT 1 = 1 AS yes, 1 = 0 AS no, NULL AS unknown, 1.5 AS x, 'a,b' AS t",
}
EXPECTED = {
    "postgresql": "yes,no,unknown,x,t\ntrue,false,,1.5,\"a,b\"\n",
    "sqlite": "yes,no,unknown,x,t\n1,0,,1.5,\"a,b\"\n",
}


def test_sql_csv_writes_booleans_as_the_exports_do(backend: str, reader_url: str) -> None:
    result = runner.invoke(app, ["sql", QUERIES[backend], "--format", "csv", "--db", reader_url],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout == EXPECTED[backend]


def test_sql_csv_booleans_of_a_view(backend: str, reader_url: str) -> None:
    """A boolean column of the export's views, with no rows: only the header (the type is what the test above
    covers; here that the query runs and writes nothing else)."""
    query = "SELECT used, flag_outlier FROM image_photometry WHERE run = 'none'"
    result = runner.invoke(app, ["sql", query, "--format", "csv", "--db", reader_url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout == "used,flag_outlier\n"
