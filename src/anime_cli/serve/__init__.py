"""`anime-cli serve`: the pipeline as a web service that admits work by memory.

A thin layer over the library (run.single, run.budget, options, logs.telemetry):
- config.py: the server's settings and the checks made before it starts;
- params.py: a request's convert options, parsed as the CLI parses them;
- body.py: a request body to a private spool file, within --max-body;
- admission.py: the memory ledger and the first-come-first-served queue;
- jobs.py: POST /v1/jobs work and its results, bounded in time and size;
- metrics.py: the Prometheus counters; log.py: one record per request;
- service.py: what the routes share, and the private spool folder;
- app.py: the routes (Starlette); server.py: uvicorn, signals, shutdown;
- page/: the web page at /, served from here (no external asset).

Imported only by the `serve` command: `anime-cli --help` never loads it.
"""

from .config import ServeConfig  # noqa: F401


def serve(config: "ServeConfig") -> int:
    """Load the models, serve until SIGTERM or Ctrl-C; the exit code."""
    from .server import run

    return run(config)
