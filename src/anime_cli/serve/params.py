"""A request's convert options, parsed by the CLI's own parsers and ranges
(anime_cli.options), refused with the CLI's own messages. Nothing a client
sends names a path: there is no option for one."""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from anime_cli.options import (FORMATS, MAX_SIDE_MIN, QUALITY_RANGE, Options, option_message, parse_bool, parse_choice,
                       parse_int)

# query name -> (the CLI's option name, the Options field, its parser)
FIELDS = {
    "style": ("--style", "style", str),
    "max_side": ("--max-side", "max_side", parse_int(MAX_SIDE_MIN)),
    "format": ("--format", "format", parse_choice(FORMATS, ("jpeg",))),
    "quality": ("--quality", "quality", parse_int(*QUALITY_RANGE)),
    "faces": ("--face-enhance", "face_enhance", parse_bool),
}
ALIASES = {"max-side": "max_side", "face_enhance": "faces", "face-enhance": "faces"}
NOT_OPTIONS = {"json", "name"}  # how to answer, what to call the picture in its record


class OptionError(ValueError):
    """A bad option: 422, one line."""


def request_options(query: Mapping[str, str], base: Options, styles: list[str]) -> Options:
    """`base` with what the request sets; OptionError otherwise."""
    changes = {}
    for key, text in query.items():
        key = ALIASES.get(key, key)
        if key in NOT_OPTIONS:
            continue
        if key not in FIELDS:
            raise OptionError(f"unknown option '{key}' (a request may set {', '.join(FIELDS)})")
        flag, attr, parse = FIELDS[key]
        try:
            changes[attr] = parse(text)
        except ValueError as e:
            raise OptionError(option_message(flag, str(e))) from None
    style = changes.get("style", base.style)
    if style not in styles:
        raise OptionError(_style_message(style, styles))
    return replace(base, **changes)


def _style_message(style: str, loaded: list[str]) -> str:
    from anime_cli.weights import catalog as weights

    try:
        weights.resolve_style(style)  # unknown or not installed: the CLI's own message
    except weights.WeightsError as e:
        return str(e)
    return (f"style '{style}' is not loaded by this server (it serves {', '.join(loaded)}; "
            f"start it with --style {style})")
