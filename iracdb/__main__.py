"""``python -m iracdb`` and the ``iracdb`` console script (``main``): the command line.

The console script imports this module, not :mod:`iracdb.cli`: a process pool's workers re-run the main script of
the program that started them (multiprocessing's forkserver and spawn), and importing the command line there
(typer, click, rich) cost each worker of ``iracdb reduce`` ~0.13 s of CPU before its first chunk.
"""


def main() -> None:
    """Run the ``iracdb`` command line on ``sys.argv``."""
    from iracdb.cli import app

    app(prog_name="iracdb")


if __name__ == "__main__":
    main()
