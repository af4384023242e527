"""The batch: two files in flight give the same pictures and records as one file at a time,
within the memory limit."""

from pathlib import Path

import numpy as np

from helpers import invoke, load_rgb, make_photo, psnr, read_log, run_cli


def test_pipelined_and_sequential_runs_give_identical_outputs(tmp_path):
    src = tmp_path / "in"
    make_photo(src / "a.jpg", size=(160, 120), quality=90)
    make_photo(src / "b.png", size=(96, 64), src="chelsea.png")
    (src / "c.txt").write_text("notes")
    make_photo(src / "d.webp", size=(128, 96), fmt="WEBP", src="rocket.jpg")
    runs = {}
    for name, extra in (("piped", []), ("seq", ["--sequential"])):
        log = tmp_path / f"{name}.jsonl"
        code, _, err = invoke("convert", src, "-o", tmp_path / name, "--log-file", log, "--no-face-enhance", *extra)
        assert code == 0, err
        runs[name] = read_log(log)
    assert [r["input"] for r in runs["piped"]] == [str(src / n) for n in ("a.jpg", "b.png", "c.txt", "d.webp")]
    for a, b in zip(runs["piped"], runs["seq"]):
        assert (a["status"], a["output_size"]) == (b["status"], b["output_size"])
    for name in ("a.jpg", "b.png", "d.webp"):
        assert (tmp_path / "piped" / name).read_bytes() == (tmp_path / "seq" / name).read_bytes()


def test_converter_api_without_the_cli(tmp_path, stylizer):
    from anime_cli.inputs.discover import discover
    from anime_cli.run.converter import Converter, Options

    make_photo(tmp_path / "in" / "p.png")
    conv = Converter(stylizer, Options(output_dir=tmp_path / "out", face_enhance=False))
    (rec,) = list(conv.run(discover([str(tmp_path / "in")], recursive=False)))
    assert rec.status == "ok" and rec.output == str(tmp_path / "out" / "p.png")
    direct = stylizer.stylize(load_rgb(tmp_path / "in" / "p.png"))
    assert np.array_equal(load_rgb(tmp_path / "out" / "p.png"), direct)


class Watched:
    """The real stylizer, watched: how many calls run at once, and the budget
    each picture was given."""

    def __init__(self, stylizer):
        import threading

        self._s, self._lock = stylizer, threading.Lock()
        self.running = self.most = 0
        self.calls = []  # (picture shape, budget, calls running beside it at any time)

    def __getattr__(self, name):
        return getattr(self._s, name)

    def render(self, rgb, budget_bytes=None, cancel=None, progress=None):
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            call = [rgb.shape, budget_bytes, self.running - 1]
            self.calls.append(call)
            for other in self.calls:
                other[2] = max(other[2], self.running - 1)
        try:
            return self._s.render(rgb, budget_bytes, cancel, progress)
        finally:
            with self._lock:
                self.running -= 1


def test_two_files_in_flight_share_the_memory_limit(tmp_path):
    """Small photos run two at a time, each on its reservation; a photo too big
    to fit beside another runs alone; the whole batch stays under --memory-limit
    and gives the pictures of a one-at-a-time run."""
    from anime_cli.inputs.discover import discover
    from anime_cli.run.budget import RESERVE
    from anime_cli.run.converter import Converter, Options
    from anime_cli.stylize.session import Stylizer
    from anime_cli.logs.telemetry import rss_bytes

    src = tmp_path / "in"
    for i, name in enumerate(["coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png"]):
        make_photo(src / f"{i}.jpg", size=(240, 180), src=name, quality=90)
    make_photo(src / "2big.png", size=(1100, 800), src="rocket.jpg")  # sorts between 1.jpg and 2.jpg
    watched = Watched(Stylizer.from_style("hayao", threads=2))
    # What the limit leaves past the process and its reserve (96 MiB), ~300 MB: room for two
    # small photos (~110 MB each with the engine's overhead) but not for the big one (~250 MB)
    # beside a small one.
    limit = rss_bytes() + RESERVE + 300 * 10**6
    outs = {}
    for mode in ("lanes", "sequential"):
        opts = Options(output_dir=tmp_path / mode, face_enhance=False, max_side=0, memory_limit=limit,
                       pipelined=mode == "lanes")
        conv = Converter(watched, opts)
        records = list(conv.run(discover([str(src)], recursive=False)))
        assert [r.status for r in records] == ["ok"] * 5
        assert conv.peaks.overall <= limit, conv.peaks.overall / 1e6
        outs[mode] = {Path(r.output).name: load_rgb(r.output) for r in records}
        if mode == "lanes":
            assert watched.most == 2
            big = [c for c in watched.calls if c[0][:2] == (800, 1100)]
            assert len(big) == 1 and big[0][2] == 0, "the big photo ran beside another"
            watched.calls.clear()
    for name, picture in outs["lanes"].items():
        if name == "2big.png":  # its plan follows what the limit leaves at that moment: 8-bit or not
            assert psnr(picture, outs["sequential"][name]) >= 45
        else:
            assert np.array_equal(picture, outs["sequential"][name]), name


def test_a_tight_memory_limit_streams_and_holds(tmp_path):
    """A limit that leaves too little for one pass: the log says the network
    streamed, the logged peak is under the limit, and the picture is still
    the network's (the fastest plan's, within rounding)."""
    src = make_photo(tmp_path / "in" / "p.jpg", size=(2400, 1800), src="astronaut.png", quality=92)
    runs = {}
    for name, limit in (("tight", "450MB"), ("default", "1GiB")):
        log = tmp_path / f"{name}.jsonl"
        code, _, err = run_cli("convert", src, "-o", tmp_path / name, "--max-side", "1024", "--no-face-enhance",
                               "--memory-limit", limit, "--log-file", log)
        assert code == 0, err
        (runs[name],) = read_log(log)
    assert runs["tight"]["plan"].startswith("stream"), runs["tight"]["plan"]
    assert runs["tight"]["peak_rss_mb"] <= 450, runs["tight"]
    assert runs["default"]["plan"].startswith("strips"), runs["default"]["plan"]
    assert psnr(load_rgb(tmp_path / "tight" / "p.jpg"), load_rgb(tmp_path / "default" / "p.jpg")) >= 40
