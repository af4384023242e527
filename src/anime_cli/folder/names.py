"""Output file names from a user's pattern (`--name '{stem}_{style}'`).

The pattern names the file without its suffix: the output format's suffix is
always added (`{stem}_{style}` -> `photo_hayao.jpg`), so a pattern can never
write a JPEG under `.png`. A pattern that already ends with that suffix
(`{stem}.{ext}`) does not get it twice. The default pattern `{stem}` gives the
names anime-cli always gave: the input's suffix is kept
when it already names the output format (photo.JPEG stays photo.JPEG).

Fields: {stem} the input's name without its suffix; {ext} the output's suffix
without the dot (jpg, png, webp, tif, or the input's own spelling when kept:
JPEG); {input_ext} the input's suffix without the dot ('' when it has none);
{style} the style's name; {width}, {height} the output's size in pixels.
Nothing else: no positional fields, attributes, indexes, conversions or format
specs, so a pattern cannot reach into Python objects or build huge strings.
"""

from __future__ import annotations

import os
import string
from pathlib import Path, PurePosixPath
from typing import Iterator

from PIL import Image

from anime_cli.errors import OutputError
from .files import WRITABLE, cut_name, real_path, same_file
from anime_cli.logs.telemetry import safe

DEFAULT = "{stem}"
FIELDS = ("stem", "ext", "style", "width", "height", "input_ext")
NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems

# Stand-ins to try a pattern with before any file is seen; input_ext is empty, as
# for a file without a suffix, so a pattern made of it alone is refused up front.
_SAMPLE = {"stem": "photo", "ext": "jpg", "style": "hayao", "width": 1280, "height": 960, "input_ext": ""}
_SEPARATORS = {"/", os.sep, os.altsep or "/", "\0"}


def check(pattern: str) -> None:
    """Raise ValueError with a one-line message if `pattern` cannot name files.
    Call before any work: the CLI prints the message and exits 2."""
    q = safe(pattern)  # the message lands on a terminal
    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError:
        raise ValueError(f"--name '{q}': unbalanced braces (write {{{{ or }}}} for a brace itself)") from None
    for literal, field, spec, conversion in parts:
        if any(c in _SEPARATORS for c in literal):
            raise ValueError(f"--name '{q}': a name cannot hold a path separator")
        if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in literal):
            raise ValueError(f"--name '{q}': a name cannot hold a control character")
        if field is None:
            continue
        if field not in FIELDS:
            raise ValueError(f"--name '{q}': unknown field {{{field}}} (fields: "
                             + ", ".join(f"{{{f}}}" for f in FIELDS) + ")")
        if spec or conversion:
            raise ValueError(f"--name '{q}': {{{field}}} takes no format spec or conversion")
    base = pattern.format(**_SAMPLE)
    if base.strip() in ("", ".", ".."):
        raise ValueError(f"--name '{q}': gives no usable name ('{base}')")


def suffix_for(input_name: str, fmt: str) -> str:
    """The output's suffix: the input's own when it names `fmt` (photo.JPEG), else
    the format's usual one (.jpg)."""
    suffix = Path(input_name).suffix
    if suffix and Image.registered_extensions().get(suffix.lower()) == fmt:
        return suffix
    return WRITABLE[fmt][0]


def render(pattern: str, input_name: str, fmt: str | None, style: str = "", size: tuple[int, int] = (0, 0),
           suffix: str | None = None) -> str:
    """The output file name (suffix included) for the input called `input_name`
    (a file name, not a path), written as Pillow format `fmt` at `size` (w, h),
    or with the given `suffix` (a video's .mp4). `pattern` must have passed
    check(). At most NAME_MAX bytes: a long stem is shortened, the suffix kept."""
    p = Path(input_name)
    suffix = suffix or suffix_for(input_name, fmt)
    values = {"stem": p.stem, "ext": suffix[1:], "style": style, "width": size[0], "height": size[1],
              "input_ext": p.suffix[1:]}
    base = _base(pattern, values, suffix)
    if base.strip() in ("", ".", ".."):  # {input_ext} alone, for a file without one
        base = _base(DEFAULT, values, suffix)
    over = _len(base + suffix) - NAME_MAX
    if over > 0 and "{stem}" in pattern:
        # shorten the stem, not what the pattern puts after it ({style}, the size)
        stem_bytes = _len(values["stem"])
        values["stem"] = cut(values["stem"], max(stem_bytes - over, min(stem_bytes, 16)))
        base = _base(pattern, values, suffix)
    return fit(base, suffix)


def _base(pattern: str, values: dict, suffix: str) -> str:
    base = pattern.format(**values)
    if suffix and base.lower().endswith(suffix.lower()) and base[:-len(suffix)].strip():
        base = base[:-len(suffix)]  # '{stem}.{ext}': the suffix is added once
    return base


def fit(base: str, suffix: str, limit: int = NAME_MAX) -> str:
    """base + suffix in at most `limit` bytes, cutting the end of base (never inside
    a character). For collision suffixes too: fit(f'{stem}_2', '.jpg') would cut
    the _2, so pass fit(stem, '_2.jpg')."""
    return cut(base, max(limit - _len(suffix), 1)) + suffix


cut = cut_name


def _len(text: str) -> int:
    return len(os.fsencode(text))


class Names:
    """Output paths for one batch. An input's output is its path relative to
    its input root, named by the pattern with the output format's suffix.
    Two inputs never share an output: the later one (in walk order) gets its
    source suffix added (photo.png -> photo_png.jpg), then _2, _3... Names
    stay under NAME_MAX bytes (the stem is shortened). No output may be an
    input."""

    def __init__(self, output_dir: Path, inputs: set[Path], pattern: str = DEFAULT, style: str = ""):
        self.output_dir, self.pattern, self.style = output_dir, pattern, style
        self.inputs = inputs  # real paths of every input of the batch
        self.claimed: dict[Path, str] = {}  # output path -> the input that took it
        # The output folder's database (store.Store): which input owns which name,
        # across runs and processes. None: this batch's own names only (a dry run).
        self.store = None

    def claim(self, job, fmt: str | None, size: tuple[int, int], suffix: str | None = None) -> Path:
        """The output path of `job`, written as Pillow format `fmt` (or with
        `suffix`, for a video) at `size` (w, h)."""
        rel = job.rel.with_name(render(self.pattern, job.rel.name, fmt, self.style, size, suffix)).as_posix()
        if self.store is not None and job.path is not None:
            # the name this input had in earlier runs, else one no other input owns
            from .database import input_key

            rel = self.store.claim(input_key(job.path), rel, alternatives(rel, job.rel.suffix))
        elif self.claimed.get(self.output_dir / rel, job.input) != job.input:
            rel = next(c for c in alternatives(rel, job.rel.suffix) if self.output_dir / c not in self.claimed)
        dest = self.output_dir / rel
        if real_path(dest) in self.inputs or (job.path is not None and same_file(dest, job.path)):
            raise OutputError(f"{job.input}: output {dest} would overwrite an input file; choose another -o")
        self.claimed[dest] = job.input
        return dest


def alternatives(rel: str, source_suffix: str) -> Iterator[str]:
    """The names an output (a '/'-separated path) falls back to when another
    input owns it, in the order they are tried: the source's suffix added
    (photo.png -> photo_gif.png for photo.gif), then _2, _3, ...; each kept
    under NAME_MAX bytes by shortening the stem."""
    p = PurePosixPath(rel)
    stem, suffix = p.stem, p.suffix
    src = source_suffix.lstrip(".").lower()
    if src and f".{src}" != suffix.lower():
        yield str(p.with_name(fit(stem, f"_{src}{suffix}")))
    for n in range(2, 10_000):
        yield str(p.with_name(fit(stem, f"_{n}{suffix}")))
