"""The command line, one file per subcommand: a thin layer over the library. May import: anything."""


def main() -> None:
    """The `anime-cli` command (the console script's entry point)."""
    from .app import main as run

    run()
