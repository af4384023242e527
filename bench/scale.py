"""Scale-out figures (a benchmark, not a test): the cost of the Ray runner and of --shard.

On the same 12 photos (the 4 samples at 3 sizes), each way as a whole process,
models loaded inside it (what a user pays):

  plain   one process, pipeline.Converter.run (two files in flight on all cores)
  shard   N processes at once, each Converter.run on its --shard K/N of the files
          (shard.Shard.select; threads = cores / N), no coordinator
  ray     convert_dataset on a local Ray with the process's cores (1-thread actors)

Per-file overhead of Ray: the marginal cost, ((ray 12 - ray 1) - (plain 12 - plain 1)) / 11,
the fixed cost (starting Ray, loading the models in every actor) apart.

    PYTHONPATH=src .venv/bin/python bench/scale.py [--shards 2] [--max-side 512] [--faces]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

SHARED = Path(os.environ.get("ANIME_CLI_SHARED", Path(__file__).resolve().parents[2] / "shared"))
PHOTOS = SHARED / "photos"
SIDES = (320, 480, 640)


def make_set(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for src in sorted(PHOTOS.glob("*.*")):
        if src.suffix.lower() not in (".png", ".jpg"):
            continue
        with Image.open(src) as im:
            im = im.convert("RGB")
            for side in SIDES:
                scale = side / max(im.size)
                small = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
                small.save(folder / f"{src.stem}_{side}.jpg", quality=95)
    return folder


def worker(way: str, src: str, out: str, max_side: int, faces: bool, shard: str | None, threads: int | None) -> None:
    if shard and shard.startswith("first"):  # the fixed cost: one file only
        src = str(sorted(Path(src).iterdir())[0])
        shard = None
    """One process of one way; prints its records' count and wall time as JSON."""
    t0 = time.perf_counter()
    from anime_cli.run.converter import Options

    options = Options(output_dir=Path(out), max_side=max_side, face_enhance=faces)
    if way == "ray":
        from anime_cli.run.on_ray import convert_dataset

        n = sum(1 for _ in convert_dataset([src], out, options, threads=1))
    else:
        from anime_cli.inputs.discover import discover
        from anime_cli.run.converter import Converter
        from anime_cli.run.shard import parse
        from anime_cli.stylize.session import Stylizer

        jobs = discover([src], False)
        if shard:
            jobs = parse(shard).select(jobs)
        detector = None
        if faces:
            from anime_cli.faces.enhance import FaceDetector

            detector = FaceDetector.load()
        n = sum(1 for _ in Converter(Stylizer.from_style("hayao", threads=threads), options, detector).run(jobs))
    print(json.dumps({"files": n, "wall": time.perf_counter() - t0}))


def run(args: list[list[str]]) -> tuple[float, int]:
    """Start the processes at once; (wall until the last ends, files done)."""
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                       os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", *a], stdout=subprocess.PIPE, env=env)
             for a in args]
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t0
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed: {[p.returncode for p in procs]}")
    return wall, sum(json.loads(o.splitlines()[-1])["files"] for o in outs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", nargs=7, metavar=("WAY", "SRC", "OUT", "MAX_SIDE", "FACES", "SHARD", "THREADS"))
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--faces", action="store_true")
    a = ap.parse_args()
    if a.worker:
        way, src, out, side, faces, shard, threads = a.worker
        worker(way, src, out, int(side), faces == "1", None if shard == "-" else shard,
               None if threads == "-" else int(threads))
        return
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        src = str(make_set(Path(tmp) / "in"))
        common = [str(a.max_side), "1" if a.faces else "0"]
        plain, n = run([["plain", src, f"{tmp}/plain", *common, "-", "-"]])
        per = max(1, cores // a.shards)
        shards, ns = run([["shard", src, f"{tmp}/shard", *common, f"{k}/{a.shards}", str(per)]
                          for k in range(1, a.shards + 1)])
        ray, nr = run([["ray", src, f"{tmp}/ray", *common, "-", "-"]])
        plain1, _ = run([["plain", src, f"{tmp}/plain1", *common, "first", "-"]])
        ray1, _ = run([["ray", src, f"{tmp}/ray1", *common, "first", "-"]])
    print(f"{n} photos ({', '.join(map(str, SIDES))} px, --max-side {a.max_side}, faces {'on' if a.faces else 'off'}), "
          f"{cores} cores, whole processes, models loaded inside:")
    print(f"  plain, 1 process        {plain:6.1f} s   {plain / n:5.2f} s/file")
    print(f"  --shard K/{a.shards}, {a.shards} processes  {shards:6.1f} s   {shards / ns:5.2f} s/file "
          f"({per} thread{'s' * (per > 1)} each)")
    print(f"  Ray, local, {cores} actors   {ray:6.1f} s   {ray / nr:5.2f} s/file   "
          f"overhead {(ray - plain) / n:+.2f} s/file against plain")
    print(f"  one file: plain {plain1:.1f} s, Ray {ray1:.1f} s; marginal cost of a file: plain "
          f"{(plain - plain1) / (n - 1):.2f} s, Ray {(ray - ray1) / (nr - 1):.2f} s "
          f"(Ray's overhead {((ray - ray1) - (plain - plain1)) / (n - 1):+.2f} s/file)")


if __name__ == "__main__":
    main()
