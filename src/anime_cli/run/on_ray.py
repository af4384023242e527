"""The Ray Data runner: the same per-file pipeline on a Ray cluster (`animegan-cli[ray]`).

    from .on_ray import convert_dataset
    for record in convert_dataset(["s3://photos/2024"], "s3://anime/2024", Options(max_side=1024)):
        print(record.status, record.output)

Each actor loads the style (and the face detector) once, then runs
`run.converter.Converter.convert` on one file at a time: probe, reduced decode, the
engine within the actor's own --memory-limit, faces, atomic write. So a record
from Ray is the record the plain CLI writes for the same file. Inputs and the
output may be local paths or URIs pyarrow understands (s3://bucket/prefix,
gs://, hdfs://; S3 options ride in the query: ?endpoint_override=host:port&scheme=http).
A remote input is downloaded to a local temporary file first (at most
--max-file-size + 1 bytes) and the output uploaded after.

Names and the cache go through one small actor (`Service`) holding the output
folder's database (folder.database) on the driver's machine: for a local output it is
the folder's own `.anime-cli.sqlite`, shared with plain CLI runs; for a remote
output it is downloaded at the start and uploaded at the end (two Ray runs into
one bucket prefix at once would lose one's names: run them into two prefixes).

Resources: a local Ray (no address) gets the cores this process may use. Actors
ask for `threads - 0.5` CPUs (0.5 for a one-thread actor), so that Ray's own
tasks always find a free slot beside them (two 1-CPU actors on 2 CPUs starve
the tasks that feed them: a deadlock), and for --memory-limit of Ray's memory
resource, so a node only gets the actors its memory holds.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import socket
import sys
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from anime_cli.folder.database import input_key
from anime_cli.inputs.discover import discover
from anime_cli.errors import AnimeCliError, first_line
from anime_cli.logs.telemetry import Record

from anime_cli.options import DEFAULT_STYLE
from .ray_actors import Service, Worker, where

_LOCAL_STORE_MB = 256


def _rows(inputs: Iterable[str], recursive: bool, exclude: Path | None) -> tuple[list[dict], list]:
    """One row per input file (how to reach it, how to show it, its relative
    path); and the filesystems the rows' "fs" index into (None: local)."""
    rows, systems = [], []
    for text in inputs:
        w = where(text)
        systems.append(w.fs)
        fs = len(systems) - 1
        if w.fs is None:
            for job in discover([w.path], recursive, (exclude,)):
                rows.append({"input": job.input, "fs": fs, "src": str(job.path),
                             "rel": job.rel.as_posix(), "key": input_key(job.path)})
            continue
        from pyarrow import fs as pafs

        info = w.fs.get_file_info(w.path)
        if info.type == pafs.FileType.Directory:
            found = w.fs.get_file_info(pafs.FileSelector(w.path, recursive=recursive))
            for f in sorted((f for f in found if f.type == pafs.FileType.File), key=lambda f: f.path):
                rel = str(PurePosixPath(f.path).relative_to(w.path))
                rows.append({"input": w.show(rel), "fs": fs, "src": f.path, "rel": rel, "key": w.show(rel)})
        elif info.type == pafs.FileType.File:
            name = PurePosixPath(w.path).name
            rows.append({"input": w.shown, "fs": fs, "src": w.path, "rel": name, "key": w.shown})
        else:
            from anime_cli.inputs.discover import MissingInput

            raise MissingInput(f"{w.shown}: no such file or folder")
    return rows, systems


def convert_dataset(inputs: Iterable[str], output: str, options=None, *, recursive: bool = False,
                    style: str = DEFAULT_STYLE, weights: str | None = None, threads: int = 1,
                    precision: str = "auto", address: str | None = None,
                    actors: int | None = None, on_total=None) -> Iterator[Record]:
    """Convert `inputs` (files, folders, URIs) into `output` on Ray; one Record per
    input file, in input order, as each is done (the JSONL log's records, plus
    `cached`). options: a pipeline.Options (its output_dir is ignored: `output`
    decides). address: a Ray cluster ("auto", "ray://head:10001"); None starts a
    local Ray on the cores this process may use, and stops it at the end.
    threads: the network's threads in each actor; actors: how many (default:
    as many as the CPUs hold at `threads` each, and the memory at --memory-limit each).
    on_total(n): called with the number of input files once they are listed.
    Raises at once (not at the first record) RayError for no Ray, an
    unlistable URI or a cluster address nothing answers at, discover.MissingInput
    for a missing input; RayError for a cluster it cannot start or join comes
    at the first record."""
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None:
        raise RayError("--ray needs Ray: pip install 'animegan-cli[ray]'")
    from .converter import Options

    options = options or Options()
    joined = "ray" in sys.modules and sys.modules["ray"].is_initialized()  # then `address` is not used
    if address and not joined:
        _reachable(address)
    try:
        out = where(output)
        rows, systems = _rows(inputs, recursive, Path(out.path) if out.fs is None else None)
    except (OSError, ValueError) as e:  # pyarrow: unknown scheme, no credentials, no such bucket
        raise RayError(f"cannot list the inputs ({first_line(e, 200)})") from None
    if on_total is not None:
        on_total(len(rows))
    return _stream(rows, systems, out, options, style, weights, threads, precision, address, actors)


def _stream(rows, systems, out, options, style, weights, threads, precision, address, actors) -> Iterator[Record]:
    """Start (or join) Ray, run, and stop what was started, however the caller stops reading."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from anime_cli.engine import default_threads

    started = False
    if not ray.is_initialized():
        kw = {"logging_level": "ERROR", "log_to_driver": False, "include_dashboard": False}
        try:
            if address:
                ray.init(address=address, **kw)
            else:
                ray.init(num_cpus=default_threads(), object_store_memory=_LOCAL_STORE_MB * 2**20, **kw)
        except Exception as e:  # ConnectionError, or Ray's own errors for a bad address
            where = f" at {address}" if address else ""
            raise RayError(f"cannot start or reach Ray{where} ({first_line(e, 200)})") from None
        started = True
    service = None
    try:
        here = ray.get_runtime_context().get_node_id()
        service = ray.remote(num_cpus=0)(Service).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(out, options.overwrite)
        n = actors or _actors(threads, options.memory_limit)
        yield from _run(rows, systems, out, service, options, n, style, weights, threads, precision)
    finally:
        try:
            if service is not None:
                ray.get(service.close.remote())
        finally:
            if started:
                ray.shutdown()


class RayError(AnimeCliError):
    """Ray cannot run the batch: the CLI prints this one line and exits 2."""


_CONNECT_S = 10  # a head node answers in milliseconds; a wrong address would have ray.init retry for minutes


def _reachable(address: str) -> None:
    """A cluster's `host:port` (or `ray://host[:port]`) accepts connections, or RayError
    in one line now: given a wrong address, ray.init retries for minutes, printing warnings."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, _, port = rest.rpartition(":")
    if "://" in address and (not host or "]" in port):  # ray://head: the client server's default port
        host, port = rest, "10001"
    if not host or not port.isdigit():
        return  # "auto", or a form Ray itself understands and reports on
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_S).close()
    except OSError as e:
        raise RayError(f"cannot reach Ray at {address} ({e.strerror or e})") from None


def _actors(threads: int, memory_limit: int) -> int:
    import ray

    res = ray.cluster_resources()
    n = int(res.get("CPU", 1) // threads)
    if memory_limit:
        n = min(n, int(res.get("memory", memory_limit) // memory_limit))
    return max(1, n)


def _run(rows, systems, out, service, options, n, style, weights, threads, precision) -> Iterator[Record]:
    from ray.data import DataContext

    if not rows:
        return
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # the records are the report
    ctx = DataContext.get_current()  # the process's own: put back as it was at the end
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.max_errored_blocks)
    ctx.execution_options.preserve_order = True  # records in input order, as the plain CLI gives them
    ctx.enable_progress_bars = False
    ctx.max_errored_blocks = -1  # an actor that dies (killed for memory) loses its file, not the batch
    try:
        yield from _records(rows, systems, out, service, options, n, style, weights, threads, precision)
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.max_errored_blocks = saved


def _records(rows, systems, out, service, options, n, style, weights, threads, precision) -> Iterator[Record]:
    import ray
    from ray.data import ActorPoolStrategy

    remote = {"num_cpus": max(0.5, threads - 0.5)}
    if options.memory_limit:
        remote["memory"] = options.memory_limit
    # one block a file: every actor gets work, and each record comes back as its file ends
    ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map(
        Worker, compute=ActorPoolStrategy(size=max(1, min(n, len(rows)))), fn_constructor_kwargs={
            "options": options, "output": out, "systems": systems, "service": service, "style": style,
            "weights": weights, "threads": threads, "precision": precision}, **remote)
    seen = set()
    for row in ds.iter_rows():
        rec = _record(json.loads(row["record"]))
        seen.add(rec.input)
        why = ray.get(service.warning.remote())
        if why:
            rec.notes.append(f"{why}; output names are not kept for reruns, nothing is cached")
        yield rec
    for r in rows:  # files whose actor died with them: each still gets its record
        if r["input"] not in seen:
            yield Record(input=r["input"], status="error", reason="worker died",
                         error=f"{r['input']}: the Ray worker converting it died (out of memory?)")


def _record(d: dict) -> Record:
    known = {f.name for f in dataclasses.fields(Record)}
    rec = Record(**{k: v for k, v in d.items() if k in known})
    if "cached" not in known:  # until telemetry.Record has the field: kept on the object
        rec.cached = d.get("cached", False)
    return rec
