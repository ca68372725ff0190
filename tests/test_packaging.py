"""A non-editable install can migrate: the wheel carries the Alembic migrations inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_migrations_and_they_work(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("iracdb-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "iracdb/_migrations/env.py" in names
        assert any(name.startswith("iracdb/_migrations/versions/0001") for name in names)
        site = tmp_path / "site"
        archive.extractall(site)
    # Import iracdb from the unpacked wheel (not the checkout) and build a schema with it.
    script = (
        "import iracdb, sys; from iracdb.db import migrate; from iracdb.db.engine import make_engine;"
        f"assert iracdb.__file__.startswith({str(site)!r}), iracdb.__file__;"
        "print(migrate.migrations_dir());"
        f"e = make_engine('sqlite:///{tmp_path / 'x.sqlite'}'); migrate.ensure_schema(e);"
        "print(migrate.current_revision(e))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env={"PYTHONPATH": str(site)}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    folder, revision = result.stdout.split()
    assert folder == str(site / "iracdb" / "_migrations") and revision
