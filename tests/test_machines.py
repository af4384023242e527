"""Every machine a user has: a CPU without bfloat16 (ANIME_CLI_NO_BF16=1 makes
this one behave as one), any core count, limits that can never be met."""

from __future__ import annotations

import pytest

from helpers import make_photo, run_cli

NO_BF16 = {"ANIME_CLI_NO_BF16": "1"}


def test_precision_bf16_without_bfloat16_is_exit_2_before_any_output_folder(tmp_path):
    src = make_photo(tmp_path / "p.jpg")
    code, _, err = run_cli("convert", src, "-o", tmp_path / "out", "--precision", "bf16", env=NO_BF16)
    assert code == 2, err
    assert err.strip() == ("anime-cli: --precision bf16: bfloat16 is switched off (ANIME_CLI_NO_BF16=1); "
                           "use --precision fp32 or auto")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("style,precision", [("hayao", "int8"), ("paprika", "fp32")])
def test_auto_without_bfloat16_runs_int8_where_the_style_has_it_else_fp32(tmp_path, style, precision):
    src = make_photo(tmp_path / "p.jpg")
    code, out, err = run_cli("convert", src, "-o", tmp_path / "out", "--no-face-enhance", "--style", style, "--json",
                             env=NO_BF16)
    assert code == 0, err
    import json

    record = json.loads(out)
    assert record["status"] == "ok" and record["plan"].endswith(f", {precision})"), record


def test_the_switch_is_what_the_engine_sees(monkeypatch):
    from anime_cli.engine import cpu

    for f in (cpu.bf16_works, cpu.native_bf16):
        f.cache_clear()
    monkeypatch.setenv("ANIME_CLI_NO_BF16", "1")
    try:
        assert not cpu.bf16_works() and not cpu.native_bf16()
        assert cpu.resolve_precision("auto") == "fp32"  # a network without an int8 table
        assert cpu.resolve_precision("auto", int8_missing=None) == "int8"
        with pytest.raises(ValueError, match="switched off"):
            cpu.resolve_precision("bf16")
    finally:
        for f in (cpu.bf16_works, cpu.native_bf16):
            f.cache_clear()


@pytest.mark.parametrize("option, value", [("--max-pixels", "0"), ("--max-file-size", "0")])
def test_a_limit_that_refuses_every_file_is_exit_2_up_front(tmp_path, option, value):
    src = make_photo(tmp_path / "p.jpg")
    code, _, err = run_cli("convert", src, "-o", tmp_path / "out", option, value)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"anime-cli: {option} 0 would refuse every")
    assert not (tmp_path / "out").exists()


# -- the defaults on any core count, and what a dry run promises -------------------


def _photo(tmp_path, size, name="face.jpg"):
    """The astronaut (a face) as a JPEG of `size`."""
    from PIL import Image

    from helpers import PHOTOS

    src = tmp_path / name
    with Image.open(PHOTOS / "astronaut.png") as im:
        im.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(src, quality=92)
    return src


def _busy_loops(n):
    import subprocess
    import sys

    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.mark.parametrize("threads, busy", [(1, 0), (16, 3), (64, 0)])
def test_the_defaults_hold_on_any_core_count(tmp_path, threads, busy):
    """3071 x 2048 bound for 1280 px, faces on, the default 1 GiB: at 16
    one-thread workers the plan grew past the budget (1167 MB) and faces
    were refused. The true peak, sampled from outside, stays inside it, also
    with three busy loops beside the run."""
    from anime_cli.options import DEFAULT_MEMORY_LIMIT
    from helpers import CLI, read_log, sampled_peak

    src = _photo(tmp_path, (3071, 2048))
    loops = _busy_loops(busy)
    try:
        code, peak, err = sampled_peak([*CLI, "convert", src, "-o", tmp_path / "out", "--threads", threads,
                                        "--log-file", tmp_path / "run.jsonl"])
    finally:
        for p in loops:
            p.kill()
            p.wait()
    assert code == 0, err
    (rec,) = read_log(tmp_path / "run.jsonl")
    assert rec["status"] == "ok" and rec["faces"] >= 1, rec
    assert "over the memory limit" not in err
    assert peak < DEFAULT_MEMORY_LIMIT, f"true peak {peak / 1e6:.0f} MB at --threads {threads} ({rec['plan']})"


def test_the_plan_does_not_grow_with_the_threads(tmp_path):
    """--threads 128 was refused: "--memory-limit 1GiB is below what the
    models need: at least 1708MB", memory planned for 128 workers."""
    import json

    src = _photo(tmp_path, (3071, 2048))
    peaks = []
    for threads in (1, 2, 4, 8, 16, 64, 128):
        code, out, err = run_cli("convert", src, "--dry-run", "--json", "--threads", threads)
        assert code == 0, err
        peaks.append(json.loads(out)["estimated_peak_mb"])
    assert max(peaks) <= 1.1 * min(peaks) and max(peaks) * 1e6 < 1024**3, peaks


def _estimate_and_peak(tmp_path, src, extra):
    import json

    from helpers import CLI, sampled_peak

    code, out, err = run_cli("convert", src, "-o", tmp_path / "out", "--dry-run", "--json", *extra)
    assert code == 0, err
    planned = json.loads(out)
    code, peak, err = sampled_peak([*CLI, "convert", src, "-o", tmp_path / "out", "--overwrite", *extra],
                                   timeout=1800)
    assert code == 0, err
    return planned, peak


@pytest.mark.parametrize("size, extra", [
    ((1224, 816), ()),
    ((1224, 816), ("--memory-limit", "0")),
    ((4000, 3000), ()),
    pytest.param((4000, 3000), ("--memory-limit", "0"), marks=pytest.mark.slow),
], ids=["1MP", "1MP-no-limit", "12MP", "12MP-no-limit"])
def test_a_dry_runs_estimate_is_the_runs_true_peak(tmp_path, size, extra):
    """estimated_peak_mb is within 15 % of the true peak (sampled from
    outside) of the run it plans. The 24 MP --max-side 0 case is in
    test_memory, where the same run also holds the budget with faces on."""
    src = _photo(tmp_path, size)
    planned, peak = _estimate_and_peak(tmp_path, src, extra)
    estimate = planned["estimated_peak_mb"] * 1e6
    assert abs(estimate - peak) <= 0.15 * peak, f"estimated {estimate / 1e6:.0f} MB, true peak {peak / 1e6:.0f} MB ({planned['plan']})"
