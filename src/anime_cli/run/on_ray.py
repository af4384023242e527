"""The Ray Data runner: the same per-file pipeline on a Ray cluster (`anime-cli[ray]`).

    from .on_ray import convert_dataset
    for record in convert_dataset(["s3://photos/2024"], "s3://anime/2024", Options(max_side=1024)):
        print(record.status, record.output)

Each actor loads the style (and the face detector) once, then runs
`pipeline.Converter.convert` on one file at a time: probe, reduced decode, the
engine within the actor's own --memory-limit, faces, atomic write. So a record
from Ray is the record the plain CLI writes for the same file. Inputs and the
output may be local paths or URIs pyarrow understands (s3://bucket/prefix,
gs://, hdfs://; S3 options ride in the query: ?endpoint_override=host:port&scheme=http).
A remote input is downloaded to a local temporary file first (at most
--max-file-size + 1 bytes) and the output uploaded after.

Names and the cache go through one small actor (`_Service`) holding the output
folder's database (store.py) on the driver's machine: for a local output it is
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
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from anime_cli.inputs.discover import Job, discover
from anime_cli.errors import AnimeCliError, first_line
from anime_cli.folder.database import DB_NAME, Inflight, Stat, Store, StoreError, cache_key, input_key, place
from anime_cli.folder.files import file_sha256
from anime_cli.folder.names import alternatives as name_candidates
from anime_cli.weights.catalog import weights_sha256
from anime_cli.logs.telemetry import Record

_LOCAL_STORE_MB = 256
_OBJECT_STORES = ("s3", "gcs")  # the object store of an embedded Ray: records are small


@dataclasses.dataclass(frozen=True)
class _Where:
    """A local folder, or a folder on a pyarrow filesystem."""

    fs: object | None  # pyarrow FileSystem, None: local
    path: str  # local path, or the path inside fs
    shown: str  # as the user gave it, without its query (for records and messages)

    def join(self, rel: str) -> str:
        return str(PurePosixPath(self.path) / rel) if self.fs is not None else os.path.join(self.path, rel)

    def show(self, rel: str) -> str:
        return f"{self.shown.rstrip('/')}/{rel}"


def _where(text: str) -> _Where:
    if "://" not in text or text.startswith("file://"):
        return _Where(None, text.removeprefix("file://"), text.removeprefix("file://"))
    from pyarrow import fs as pafs

    fs, path = pafs.FileSystem.from_uri(text)
    return _Where(fs, path, text.split("?", 1)[0])


def _rows(inputs: Iterable[str], recursive: bool, exclude: Path | None) -> tuple[list[dict], list]:
    """One row per input file (how to reach it, how to show it, its relative
    path); and the filesystems the rows' "fs" index into (None: local)."""
    rows, systems = [], []
    for text in inputs:
        w = _where(text)
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


class _Service:
    """Names and cache for every actor: the Store, and which keys are being computed.
    A database that cannot be opened or fails is bookkeeping lost, never a file
    (destinations.py's rule): names are then decided here in memory, nothing cached."""

    def __init__(self, output: _Where, overwrite: bool):
        self.out = output
        self.tmp = None
        self.error = None  # why the database is not used
        self._warned = False
        self.names: dict[str, str] = {}  # name -> key, for the names decided without the database
        try:
            if output.fs is None:
                os.makedirs(output.path, exist_ok=True)
                self.store = Store(output.path)
            else:
                self.tmp = tempfile.mkdtemp(prefix="anime-cli-store.")
                local = os.path.join(self.tmp, DB_NAME)
                self._copy(output.fs, output.join(DB_NAME), None, local)
                self.store = Store(self.tmp, local, relative=False)
        except StoreError as e:
            self.store, self.error = None, str(e)
        self.inflight = Inflight()
        self.overwrite = overwrite

    def _lost(self, e: StoreError) -> None:
        if self.store is None or self.store.error is None:
            raise e  # not the database: every candidate name taken
        self.error = self.store.error

    @staticmethod
    def _copy(src_fs, src, dst_fs, dst) -> None:
        from pyarrow import fs as pafs

        try:
            pafs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs or pafs.LocalFileSystem())
        except (FileNotFoundError, OSError):
            pass  # no database yet: the first run into this folder

    def _stat(self, path: str) -> Stat | None:
        if self.out.fs is None:
            from anime_cli.folder.database import local_stat

            return local_stat(path)
        info = self.out.fs.get_file_info(path)
        if info.size is None:
            return None
        return Stat(info.size, info.mtime_ns or 0)

    def claim(self, key: str, wanted: str, source_suffix: str) -> str:
        if self.error is None:
            try:
                name = self.store.claim(key, wanted, name_candidates(wanted, source_suffix))
                self.names.setdefault(name, key)
                return name
            except StoreError as e:
                self._lost(e)
        for name in (wanted, *name_candidates(wanted, source_suffix)):
            if self.names.setdefault(name, key) == key:
                return name
        raise StoreError(f"{wanted}: every candidate output name is taken")

    def begin(self, ck: str):
        """('hit', path) | ('compute', None): compute, then end() | ('wait', None): ask again soon."""
        if not self.overwrite and self.error is None:
            try:
                hit = self.store.lookup(ck, self._stat)
            except StoreError as e:
                self._lost(e)
                hit = None
            if hit is not None:
                return "hit", hit
        return ("compute", None) if self.inflight.begin(ck) else ("wait", None)

    def end(self, ck: str, path: str | None) -> None:
        try:
            if path is not None and self.error is None:
                self.store.record(ck, path, self._stat)
        except StoreError as e:
            self._lost(e)
        finally:
            self.inflight.end(ck)

    def warning(self) -> str | None:
        """Why the database is not used, once (for the record of the file it happened in)."""
        if self.error is None or self._warned:
            return None
        self._warned = True
        return self.error

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        if self.tmp is not None:
            if self.error is None:
                self._copy(None, os.path.join(self.tmp, DB_NAME), self.out.fs, self.out.join(DB_NAME))
            shutil.rmtree(self.tmp, ignore_errors=True)


class _Worker:
    """One Ray actor: the models loaded once, then one file per call."""

    def __init__(self, options, output: _Where, systems: list, service, style: str, weights: str | None,
                 threads: int, precision: str):
        from .converter import Converter
        from anime_cli.stylize.session import Stylizer

        if weights:
            stylizer = Stylizer.from_weights(weights, threads=threads, precision=precision)
        else:
            stylizer = Stylizer.from_style(style, threads=threads, precision=precision)
        detector = None
        if options.face_enhance:
            from anime_cli.faces.enhance import FaceDetector

            detector = FaceDetector.load()
        self.out, self.systems, self.service, self.options = output, systems, service, options
        # outputs are staged in a per-file temporary folder (a Converter per file, in
        # __call__: a Converter is cheap, the models are not), then put in place
        self._staged = dataclasses.replace(options, output_dir=None, overwrite=True, pipelined=False)
        self._models = (Converter, stylizer, detector)
        self.weights_sha = weights_sha256(style, weights)
        self.precision = stylizer.engine.precision
        self.detector = detector is not None

    def __call__(self, row: dict) -> dict:
        import ray

        rec, cached = Record(input=row["input"]), False
        # per file, not per actor: Ray ends actors without running their finalizers
        with tempfile.TemporaryDirectory(prefix="anime-cli-ray.") as work:
            make, stylizer, detector = self._models
            staged = dataclasses.replace(self._staged, output_dir=Path(work) / "out")
            self.converter = make(stylizer, staged, detector, use_store=False)  # names and cache: the service's
            try:
                rec, cached = self._convert(row, Path(work), ray)
            except Exception as e:  # a failing file is a record, never a failed job
                text = first_line(e)
                rec.status, rec.reason, rec.error = "error", "unexpected error", f"{row['input']}: {text}"
                rec.output = None
        out = dataclasses.asdict(rec)
        out["cached"] = cached
        return {"record": json.dumps(out)}  # a string: Arrow would make a struct of timings, key by key

    def _convert(self, row: dict, work: Path, ray) -> tuple[Record, bool]:
        local = self._fetch(row, work)
        job = Job(row["input"], local, Path(row["rel"]))
        ck = None
        if local.is_file() and local.stat().st_size <= self.options.max_file_size:
            ck = cache_key(file_sha256(local), self.weights_sha, self.precision, self.options, self.detector)
            while True:
                state, hit = ray.get(self.service.begin.remote(ck))
                if state != "wait":
                    break
                time.sleep(0.1)
            if state == "hit":
                return self._from_cache(row, job, hit), True
        written = None
        try:
            rec = self.converter.convert(job)
            if rec.status == "ok":
                staged, rec.output = Path(rec.output), None
                try:
                    written = self._put(row, rec, staged)
                finally:
                    staged.unlink(missing_ok=True)
        finally:
            if ck is not None:
                ray.get(self.service.end.remote(ck, written))
        return rec, False

    def _fetch(self, row: dict, work: Path) -> Path:
        fs = self.systems[row["fs"]]
        if fs is None:
            return Path(row["src"])
        # the same base name: probe messages and the output name come from it
        local = work / "in" / PurePosixPath(row["rel"]).name
        local.parent.mkdir()
        limit = self.options.max_file_size + 1  # enough for the probe to refuse a file too large
        with fs.open_input_stream(row["src"]) as src, open(local, "wb") as dst:
            while limit > 0 and (block := src.read(min(limit, 1 << 20))):
                dst.write(block)
                limit -= len(block)
        return local

    def _final_name(self, row: dict, named: str) -> str:
        """The output's name in the output folder: `named` is the file name the
        staged run gave it (folder.names: the --name pattern, the 255-byte rule,
        as in-process), claimed in the folder's database as Names.claim does."""
        import ray

        rel = PurePosixPath(row["rel"])
        return ray.get(self.service.claim.remote(row["key"], str(rel.with_name(named)), rel.suffix))

    def _put(self, row: dict, rec: Record, staged: Path) -> str | None:
        """Move the staged output to its claimed name; the written path, None when not written."""
        name = self._final_name(row, staged.name)
        dest = self.out.join(name)
        if self.out.fs is None:
            if os.path.exists(row["src"]) and os.path.exists(dest) and os.path.samefile(dest, row["src"]):
                rec.status, rec.reason = "error", "output"
                rec.error = f"{row['input']}: output {dest} would overwrite an input file; choose another -o"
                return None
            try:
                place(staged, dest, overwrite=self.options.overwrite)
            except FileExistsError:
                rec.status, rec.reason = "skipped", "exists"
                return None
        else:
            if not self.options.overwrite and self.out.fs.get_file_info(dest).size is not None:
                rec.status, rec.reason = "skipped", "exists"
                return None
            # an object store's put is atomic: the object appears whole or not at all
            if self.out.fs.type_name not in _OBJECT_STORES:  # they have no folders: a marker object would be litter
                self.out.fs.create_dir(str(PurePosixPath(dest).parent), recursive=True)
            with open(staged, "rb") as src, self.out.fs.open_output_stream(dest) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        rec.output = dest if self.out.fs is None else self.out.show(name)
        return dest

    def _probed(self, job: Job) -> Record:
        """The record of a dry run (the header read, nothing decoded): what a
        cache hit says of its input, as the in-process pipeline's does."""
        make, stylizer, detector = self._models
        dry = dataclasses.replace(self.converter.options, dry_run=True)
        return make(stylizer, dry, detector, use_store=False).convert(job)

    def _from_cache(self, row: dict, job: Job, hit: str) -> Record:
        """The record of a file whose output is already computed: link or copy it."""
        from PIL import Image

        probed = self._probed(job)
        if probed.output is None:  # the header no longer reads: say why, as in-process
            return probed
        rec = Record(input=row["input"], input_bytes=job.path.stat().st_size, input_format=probed.input_format,
                     input_size=probed.input_size, style=probed.style)
        name = self._final_name(row, PurePosixPath(probed.output).name)
        dest = self.out.join(name)
        rec.status = "ok"
        if dest != hit:
            if self.out.fs is None:
                try:
                    place(hit, dest, overwrite=self.options.overwrite)
                except FileExistsError:
                    rec.status, rec.reason = "skipped", "exists"
            elif not self.options.overwrite and self.out.fs.get_file_info(dest).size is not None:
                rec.status, rec.reason = "skipped", "exists"
            else:
                self.out.fs.copy_file(hit, dest)
        elif not self.options.overwrite:
            rec.status, rec.reason = "skipped", "exists"
        if rec.status == "ok":
            rec.output = dest if self.out.fs is None else self.out.show(name)
            f = open(dest, "rb") if self.out.fs is None else self.out.fs.open_input_file(dest)
            with f, Image.open(f) as im:  # the header only
                rec.output_size = list(im.size)
        return rec


def convert_dataset(inputs: Iterable[str], output: str, options=None, *, recursive: bool = False,
                    style: str = "hayao", weights: str | None = None, threads: int = 1,
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
        raise RayError("--ray needs Ray: pip install 'anime-cli[ray]'")
    from .converter import Options

    options = options or Options()
    joined = "ray" in sys.modules and sys.modules["ray"].is_initialized()  # then `address` is not used
    if address and not joined:
        _reachable(address)
    try:
        out = _where(output)
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
        service = ray.remote(num_cpus=0)(_Service).options(
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
        _Worker, compute=ActorPoolStrategy(size=max(1, min(n, len(rows)))), fn_constructor_kwargs={
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
