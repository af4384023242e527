"""The Ray runner's actors: `Service` (the output folder's names and cache,
one for the whole run) and `Worker` (the models loaded once, then one file a
call), and `Where` (a local path or a URI pyarrow understands)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path, PurePosixPath

from anime_cli.errors import first_line
from anime_cli.folder.cache import Inflight, cache_key, place
from anime_cli.folder.database import DB_NAME, Stat, Store, StoreError
from anime_cli.folder.files import file_sha256
from anime_cli.folder.names import alternatives as name_candidates
from anime_cli.inputs.discover import Job
from anime_cli.logs.telemetry import Record
from anime_cli.weights.catalog import weights_sha256

_OBJECT_STORES = ("s3", "gcs")  # they have no folders


@dataclasses.dataclass(frozen=True)
class Where:
    """A local folder, or a folder on a pyarrow filesystem."""

    fs: object | None  # pyarrow FileSystem, None: local
    path: str  # local path, or the path inside fs
    shown: str  # as the user gave it, without its query (for records and messages)

    def join(self, rel: str) -> str:
        return str(PurePosixPath(self.path) / rel) if self.fs is not None else os.path.join(self.path, rel)

    def show(self, rel: str) -> str:
        return f"{self.shown.rstrip('/')}/{rel}"


def where(text: str) -> Where:
    if "://" not in text or text.startswith("file://"):
        return Where(None, text.removeprefix("file://"), text.removeprefix("file://"))
    from pyarrow import fs as pafs

    fs, path = pafs.FileSystem.from_uri(text)
    return Where(fs, path, text.split("?", 1)[0])


class Service:
    """Names and cache for every actor: the Store, and which keys are being computed.
    A database that cannot be opened or fails is bookkeeping lost, never a file
    (destinations.py's rule): names are then decided here in memory, nothing cached."""

    def __init__(self, output: Where, overwrite: bool):
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


class Worker:
    """One Ray actor: the models loaded once, then one file per call."""

    def __init__(self, options, output: Where, systems: list, service, style: str, weights: str | None,
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
