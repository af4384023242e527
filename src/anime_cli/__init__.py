"""anime-cli: photos, videos and animations into anime style, on the CPU, within a memory budget.

The public API (each name is imported on first use, so `anime-cli --help` and
usage errors never import torch):

    from anime_cli import Stylizer, Converter, Options, discover

    s = Stylizer.from_style("hayao")
    conv = Converter(s, Options(output_dir=Path("out")))
    for record in conv.run(discover(["photos/"], recursive=True)):
        print(record.status, record.output)
    conv.close()

The layers, lowest first (a package imports only those before it):
errors, options -> logs -> folder -> inputs -> engine -> models -> weights ->
stylize -> faces -> kinds -> run -> serve, cli.
"""

from __future__ import annotations

import importlib
import os

# Before anything loads torch and its libgomp (read once): a band worker's
# OpenMP team whose idle threads spin holds the cores its own team-mates wait
# for on a busy machine; one two-thread team ran 0.03 MP/s against 0.26 when
# they sleep (2 loaded cores, bench/threads.py --workers 1). The user's own
# setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_API = {
    "Options": "anime_cli.options",
    "AnimeCliError": "anime_cli.errors",
    "UsageError": "anime_cli.errors",
    "discover": "anime_cli.inputs.discover",
    "Record": "anime_cli.logs.telemetry",
    "Stylizer": "anime_cli.stylize.session",
    "StyleModel": "anime_cli.stylize.session",
    "FaceDetector": "anime_cli.faces.enhance",
    "Converter": "anime_cli.run.converter",
    "Batch": "anime_cli.run.batch",
    "start": "anime_cli.run.batch",
    "start_ray": "anime_cli.run.batch",
    "convert_dataset": "anime_cli.run.on_ray",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'anime_cli' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
