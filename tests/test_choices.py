"""Closed choices are defined once (iracdb.choices): the library validates against them and the command line offers
exactly them, with their meanings in --help."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from iracdb import choices
from iracdb.cli import app

runner = CliRunner()

OPTIONS = (
    ("reduce", "--file-type", choices.FILE_TYPES),
    ("reduce", "--centroid", choices.CENTROID_METHODS),
    ("reduce", "--background", choices.BACKGROUND_METHODS),
    ("reduce", "--corrections", choices.CORRECTION_SETS),
    ("reduce", "--subarray", choices.SUBARRAY_MODES),
    ("reduce", "--reject", choices.REJECT_RULES),
    ("reduce", "--best-by", choices.BEST_CRITERIA),
    ("export", "--format", choices.EXPORT_FORMATS),
)


@pytest.mark.parametrize(("command", "option", "defined"), OPTIONS)
def test_the_command_line_offers_the_library_choices(command: str, option: str, defined: dict[str, str]) -> None:
    help_text = " ".join(runner.invoke(app, [command, "--help"], terminal_width=400).stdout.split())
    assert f"{option} {'|'.join(defined)}" in help_text
    for value, meaning in defined.items():
        assert f"{value}: {meaning}" in help_text, value


# --reject and --centroid (a list) are read by the library, which refuses a bad value in one line (tested there).
@pytest.mark.parametrize(("command", "option", "defined"),
                         [o for o in OPTIONS if o[1] not in ("--reject", "--centroid")])
def test_a_value_not_defined_is_refused(command: str, option: str, defined: dict[str, str]) -> None:
    args = [command, "x", option, "bogus"] if command == "export" else [command, "-n", "x", option, "bogus", "--auto"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "bogus" in result.output


def test_the_library_refuses_what_the_choices_do_not_hold() -> None:
    from iracdb.errors import BadOption
    from iracdb.photometry.measure import PhotometryParams
    from iracdb.reduce import ReduceOptions, Target

    with pytest.raises(BadOption, match="box, moment or gauss"):
        PhotometryParams(centroid="peak")  # type: ignore[arg-type]
    with pytest.raises(BadOption, match="planes or median"):
        ReduceOptions(targets=(Target("auto"),), subarray="all")  # type: ignore[arg-type]
