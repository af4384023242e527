"""`anime-cli styles`: the installed styles and the face detector."""

from __future__ import annotations

import typer

from anime_cli.errors import AnimeCliError

from .shell import fail


def styles():
    """List the styles and the face detector: name, family, installed and sha256
    check (ok, not installed, sha256 mismatch), licence and a description."""
    from anime_cli.weights import catalog as weights

    try:
        entries = list(weights.manifest().values())
    except AnimeCliError as e:
        fail(str(e))
    typer.echo(f"{'name':<10} {'family':<16} {'status':<15} description and licence")
    for w in entries:
        family = w.family or w.kind
        typer.echo(f"{w.name:<10} {family:<16} {weights.status(w.name):<15} {w.description}. "
                   f"Licence: {w.licence}")
