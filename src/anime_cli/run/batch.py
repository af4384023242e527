"""A whole run as the CLI makes it, for any caller: check everything, load
the models, then convert, count and summarise.

`start` does every check that can fail before anything touches the disk
(inputs, stdout, shard, style, weights, the memory limit) and only then
creates the output folder and opens the log; each failure is a UsageError
or a WeightsError, one line. `start_ray` does the same for the Ray runner.
`Batch.records` runs the conversion, in this process or on Ray: the same
records either way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from anime_cli.inputs.discover import STDIN, discover
from anime_cli.errors import Fatal, UsageError
from anime_cli.options import DEFAULT_STYLE, Options, format_bytes
from anime_cli.logs.telemetry import JsonlLog, Record


def start(inputs: list[str], options: Options, *, recursive: bool = False, log_file: Path | None = None,
          style: str = DEFAULT_STYLE, weights_path: Path | None = None, threads: int | None = None,
          precision: str = "auto", shard: str | None = None) -> "Batch":
    from anime_cli.folder import files as output
    from .converter import Converter

    check_limits(options)
    check_precision(precision, style, weights_path)
    jobs = discover(inputs, recursive, (options.output_dir,), log_file=log_file)
    notes = list(jobs.notes)
    if inputs.count(STDIN) > 1:
        raise UsageError("'-' (stdin) can be given only once")
    if shard is not None:
        jobs = _shard(shard, inputs).select(jobs)
    if options.output_dir is None and len(jobs) != 1:
        raise UsageError(f"-o - writes one picture to stdout, but the inputs hold {len(jobs)} files")
    if options.output_dir is not None:
        _usage(output.check_output_dir, options.output_dir, create=False)  # before the models load: fail fast
    stylizer = load_stylizer(style, weights_path, threads, precision)
    detector = None
    if options.face_enhance:
        from anime_cli.faces.enhance import FaceDetector

        detector = FaceDetector.load()
    check_memory_limit(options, stylizer)
    if options.output_dir is not None and not options.dry_run:
        _usage(output.check_output_dir, options.output_dir)
    conv = Converter(stylizer, options, detector)
    return Batch(lambda: conv.run(jobs), len(jobs), options, _open_log(log_file), lambda: conv.peaks.overall,
                 converter=conv, notes=notes)


def check_memory_limit(options: Options, stylizer) -> None:
    """UsageError when --memory-limit is below what the loaded models need."""
    from . import budget
    from anime_cli.logs.telemetry import rss_bytes

    if options.memory_limit:
        side = options.face_px() if options.face_enhance else 64  # the least a file can ask of the network
        need = rss_bytes() + budget.RESERVE + stylizer.min_bytes(side, side)
        if options.memory_limit < need:
            raise UsageError(f"--memory-limit {format_bytes(options.memory_limit)} is below what the models "
                             f"need: at least {need / 1e6:.0f}MB (or 0 for no limit)")


def start_ray(inputs: list[str], output: str, options: Options, *, address: str | None = None,
              recursive: bool = False, log_file: Path | None = None, style: str = DEFAULT_STYLE,
              weights_path: Path | None = None, threads: int | None = None, precision: str = "auto") -> "Batch":
    """The same batch on Ray Data (anime_cli.run.on_ray): local with address None."""
    from . import on_ray as runner

    check_limits(options)
    if STDIN in inputs or output == STDIN:
        raise UsageError("--ray reads files and folders and writes a folder: '-' (stdin/stdout) is not for it")
    if weights_path is None:
        load_style_check(style)
    check_precision(precision, style, weights_path)
    total = [0]
    records = runner.convert_dataset(inputs, output, options, recursive=recursive, style=style,
                                     weights=str(weights_path) if weights_path else None, threads=threads or 1,
                                     precision=precision, address=None if address == "local" else address,
                                     on_total=lambda n: total.__setitem__(0, n))
    peaks: list[float] = [0.0]

    def run():
        for rec in records:
            peaks[0] = max(peaks[0], rec.peak_rss_mb or 0.0)
            yield rec

    return Batch(run, total[0], options, _open_log(log_file), lambda: int(peaks[0] * 1e6))


def check_limits(options: Options) -> None:
    """Limits that would refuse every file are usage errors, before any work."""
    if options.max_pixels <= 0:
        raise UsageError("--max-pixels 0 would refuse every picture: give a pixel count such as 150M")
    if options.max_file_size <= 0:
        raise UsageError("--max-file-size 0 would refuse every photo: give a size such as 200MB")


def check_precision(precision: str, style: str = DEFAULT_STYLE, weights_path: Path | None = None) -> None:
    """--precision bf16 or int8 where they cannot run would fail every file
    in the network: say so before the models load."""
    if precision == "bf16":
        from anime_cli.engine.cpu import bf16_missing, bf16_works

        if not bf16_works():
            raise UsageError(f"--precision bf16: {bf16_missing()}; use --precision fp32 or auto")
    if precision == "int8":
        from anime_cli.engine import int8
        from anime_cli.weights import catalog

        try:
            table = catalog.int8_table(style, weights_path)
        except (OSError, catalog.WeightsError):
            return  # the weights themselves are refused in their own words when they load
        if not table:
            which = str(weights_path) if weights_path else f"style {style}"
            calibrated = ", ".join(e.name for e in catalog.styles() if e.int8)
            raise UsageError(f"--precision int8: {which} has no int8 calibration (the styles with one: {calibrated});"
                             " use --precision fp32 or auto")
        why = int8.missing(table)
        if why:
            raise UsageError(f"--precision int8: {why}; use --precision fp32 or auto")


def _shard(text: str, inputs: list[str]):
    from .shard import ShardError, parse

    if STDIN in inputs:
        raise UsageError("--shard splits files and folders between processes: '-' (stdin) is not for it")
    try:
        return parse(text)
    except ShardError as e:
        raise UsageError(str(e)) from None


def _open_log(log_file: Path | None) -> JsonlLog:
    try:
        return JsonlLog(log_file)  # before any work: an unusable log file is a usage error
    except OSError as e:
        raise UsageError(f"{log_file}: cannot open the log file ({e.strerror or e})") from None


def _usage(check, *args, **kw):
    """An unusable output folder is a usage error: nothing can start."""
    from anime_cli.errors import OutputError

    try:
        check(*args, **kw)
    except OutputError as e:
        raise UsageError(str(e)) from None


def load_style_check(style: str) -> None:
    from anime_cli.weights import catalog as weights

    try:
        weights.resolve_style(style)
    except weights.WeightsError as e:
        raise UsageError(str(e)) from None


def load_stylizer(style: str, weights_path: Path | None, threads: int | None, precision: str):
    from anime_cli.stylize.session import Stylizer

    if weights_path is not None:
        return Stylizer.from_weights(weights_path, threads=threads, precision=precision)
    load_style_check(style)
    return Stylizer.from_style(style, threads=threads, precision=precision)


@dataclass
class Batch:
    run: Callable[[], Iterator[Record]]  # the records, in input order; raises errors.Fatal
    total: int  # input files
    options: Options
    log: JsonlLog
    peak: Callable[[], int]  # the whole run's peak RSS so far, bytes
    converter: object | None = None  # in-process runs: the pipeline (progress attaches to it)
    notes: list = field(default_factory=list)  # what the user should hear before the records
    counts: dict = field(default_factory=lambda: {"ok": 0, "skipped": 0, "error": 0, "planned": 0})
    over_budget: list = field(default_factory=list)  # peak RSS (MB) of files that went over --memory-limit
    started: float = field(default_factory=time.perf_counter)
    _log_warned: bool = False

    def records(self) -> Iterator[tuple[Record, str | None]]:
        """(record, a line to print after it or None), in input order."""
        warned = False
        try:
            for rec in self.run():
                why = self.converter.destinations.store_error if self.converter is not None else None
                if why and not warned:
                    warned = True
                    yield rec, f"anime-cli: {why}; output names are not kept for reruns, nothing is cached"
                else:
                    yield rec, None
        except Fatal as stop:
            yield stop.record, f"stopping: {stop.record.error}; nothing after it can be written"

    def tally(self, rec: Record) -> None:
        self.counts[rec.status] += 1
        self.log.write(rec)
        limit = self.options.memory_limit
        if limit and rec.peak_rss_mb and rec.peak_rss_mb * 1e6 > limit:
            self.over_budget.append(rec.peak_rss_mb)

    def log_error_new(self) -> bool:
        """True once, when the log has just failed."""
        if self.log.error and not self._log_warned:
            self._log_warned = True
            return True
        return False

    def exit_code(self) -> int:
        unfinished = self.total > sum(self.counts.values())
        return 1 if self.counts["error"] or self.log.error or unfinished else 0

    def summary(self, interrupted: bool = False) -> str:
        c = self.counts
        left = self.total - sum(c.values())
        rest = f", {left} not started" if left > 0 else ""
        over = ""
        if self.over_budget:
            over = (f"; {len(self.over_budget)} over the memory limit (peak {max(self.over_budget):.0f} MB"
                    f" > {self.options.memory_limit / 1e6:.0f} MB)")
        planned = f"{c['planned']} planned, " if c["planned"] else ""
        return (f"{'interrupted' if interrupted else 'done'}: {planned}{c['ok']} ok, {c['skipped']} skipped, "
                f"{c['error']} failed{rest} in {time.perf_counter() - self.started:.1f}s, "
                f"peak RSS {self.peak() / 1e6:.0f} MB{over}")

    def close(self) -> None:
        self.log.close()
        if self.converter is not None:
            self.converter.close()
