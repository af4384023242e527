"""The strip engine (anime_cli.engine) against the untiled generator.

In float32 the engine claims exactness up to float rounding, whatever the plan
(every layer stored, or recomputed from checkpoints), the strip heights, the
band edges and the number of threads. In bfloat16 it claims ~50 dB PSNR on
real photos (the issue asks for 30). Both on the sample photos and on a
close-up portrait, the smooth kind of picture where approximate statistics
show as a global tone shift.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from anime_cli import engine as tiles
from anime_cli import models
from anime_cli.engine import geometry
from anime_cli.engine import plan as planning
from anime_cli.models.animeganv2 import load_generator
from anime_cli.weights.catalog import load
from helpers import SAMPLES, load_rgb, psnr, untiled

# Where the CPU has no native bfloat16 (AVX2 only, or ANIME_CLI_NO_BF16=1) the
# bf16 half of a test is skipped; its fp32 twin always runs.
needs_bf16 = pytest.mark.skipif(not tiles.native_bf16(), reason="no native bfloat16 on this CPU (or ANIME_CLI_NO_BF16)")
PRECISIONS = ["fp32", pytest.param("bf16", marks=needs_bf16)]
DB = {"fp32": 80, "bf16": 45}  # fidelity to the eager float32 network


@pytest.fixture(scope="module")
def generator():
    return load_generator(load("hayao"))


@pytest.fixture(scope="module")
def fp32(generator):
    return tiles.Engine(models.layers_for(generator), threads=2, precision="fp32")


@pytest.fixture(scope="module", params=PRECISIONS)
def engine(generator, request):
    """The engine in bf16, and its fp32 twin."""
    return tiles.Engine(models.layers_for(generator), threads=2, precision=request.param)


def portrait(photos, size=512) -> np.ndarray:
    """A close-up portrait: the astronaut's face, upscaled (smooth skin, soft light)."""
    with Image.open(photos / "astronaut.png") as im:
        return np.asarray(im.convert("RGB").crop((130, 0, 330, 200)).resize((size, size), Image.Resampling.BICUBIC))


def tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float().div_(127.5).sub_(1.0)


def random_plans(engine, h, w, count, seed=0):
    """The two extremes and `count` random checkpoint sets the planner allows."""
    geo = geometry.Geometry(engine.layers, h, w, engine.precision, engine.threads)
    planner, n = planning.Planner(geo), len(engine.layers)
    sets = [set(range(n - 1)), set()]
    rng = random.Random(seed)
    for _ in range(count):
        chosen, last = [], -1
        for k in range(n - 1):
            if rng.random() < 0.4 and planner.allowed(last, k):
                chosen.append(k)
                last = k
        sets.append(set(chosen))
    return [planning.Plan("forced", frozenset(s), 0, 0.0, True) for s in sets]


# -- exactness (float32) --------------------------------------------------------


def assert_exact(engine, x, ref, plans):
    """float32: each plan gives the reference output, up to float rounding."""
    for plan in plans:
        assert (engine.run(x, plan=plan) - ref).abs().max().item() < 1e-4, sorted(plan.stored)


def test_fp32_every_plan_is_exact(generator, fp32, monkeypatch, photos):
    """Any set of stored layers, with strips of a few rows, gives the untiled result."""
    monkeypatch.setattr(geometry, "STRIP_BYTES", 48 << 10)  # many strips, many band edges
    rgb = load_rgb(photos / "coffee.png")[100:172, 200:304]  # 72 x 104
    x = tensor(rgb)
    with torch.inference_mode():
        ref = generator(x)
    assert_exact(fp32, x, ref, random_plans(fp32, 72, 104, count=6))


@pytest.mark.parametrize("h,w", [(8, 1000), (1000, 8), (8, 8), (100, 36)])
def test_fp32_odd_shapes_are_exact(generator, fp32, monkeypatch, h, w):
    """Thin and tiny pictures; heights that are no multiple of any strip."""
    monkeypatch.setattr(geometry, "STRIP_BYTES", 40 << 10)
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w)) * 2 - 1
    with torch.inference_mode():
        ref = generator(x)
    for budget in (None, 0):  # every layer stored; then the least memory: everything recomputed
        assert (fp32.run(x, budget) - ref).abs().max().item() < 1e-4


def test_threads_do_not_change_the_result(generator, photos):
    """Strips are independent and the statistics are summed in strip order:
    two one-thread workers give one worker's picture bit for bit. Three
    threads are two workers, one of them a two-thread oneDNN team, whose
    sums run in another order: uint8 rounding flips only."""
    rgb = load_rgb(photos / "chelsea.png")
    outs = [tiles.Engine(models.layers_for(generator), threads=t, precision="fp32").stylize(rgb) for t in (1, 2, 3)]
    assert np.array_equal(outs[0], outs[1])
    diff = np.abs(outs[0].astype(int) - outs[2])
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


# -- fidelity on real photos ----------------------------------------------------


@pytest.mark.parametrize("name", SAMPLES + ["portrait"])
def test_bf16_and_fp32_are_faithful_on_real_photos(generator, engine, photos, name):
    rgb = portrait(photos) if name == "portrait" else load_rgb(photos / name)
    ref = untiled(generator, rgb)
    out = engine.stylize(rgb)
    assert out.shape == rgb.shape
    assert psnr(out, ref) >= 40  # ~50-55 dB measured; the issue asks for 30
    assert_no_seam(out, ref)


def test_every_strategy_is_faithful_on_a_portrait(generator, photos, monkeypatch):
    """The budget picks the plan; each one keeps the portrait untouched: exact
    in float32 with layers stored in float32, ~55-60 dB where they are stored
    in 8 bits; down to a budget nothing fits (the least-memory plan)."""
    monkeypatch.setattr(geometry, "STRIP_BYTES", 256 << 10)  # small strips: stored layers dominate, as on big pictures
    rgb = portrait(photos, 384)
    ref = untiled(generator, rgb)
    engine = tiles.Engine(models.layers_for(generator), threads=2, precision="fp32")
    full = engine.make_plan(384, 384, None)
    assert full.name == "strips" and not full.compact
    seen = set()
    for budget in (None, full.bytes * 3 // 4, full.bytes // 2, full.bytes // 3, 0):
        out, plan = engine.render(rgb, budget)
        seen.add((plan.name, plan.compact))
        if plan.compact:
            assert psnr(out, ref) >= 50, plan.describe()
        else:
            assert np.abs(out.astype(int) - ref).max() <= 1, plan.describe()
        assert_no_seam(out, ref)
    assert {name for name, _ in seen} == {"strips", "stream"}, seen


def test_8bit_storage_on_real_photos(generator, engine, photos):
    """Every layer stored in 8 bits (the most any plan uses) still stays far above 30 dB."""
    for name in ("coffee.png", "astronaut.png"):
        rgb = load_rgb(photos / name)
        ref = untiled(generator, rgb)
        h, w = geometry.padded_size(*rgb.shape[:2])
        plan = planning.Plan("forced", frozenset(range(len(engine.layers) - 1)), 0, 1.0, True, compact=True)
        out = np.empty_like(rgb)
        engine.stream(tiles.PictureSource(rgb), tiles.PictureSink(out), plan=plan)
        assert psnr(out, ref) >= 45, name
        assert_no_seam(out, ref)


def assert_no_seam(out: np.ndarray, ref: np.ndarray) -> None:
    """No row or column differs from the reference much more than the others
    do: a seam would stand out as a line of larger error."""
    d = np.abs(out.astype(np.float64) - ref.astype(np.float64)).mean(axis=2)
    for profile in (d.mean(axis=1), d.mean(axis=0)):
        assert profile.max() <= 3 * np.median(profile) + 0.5, profile.argmax()


# -- small pictures and the Stylizer ---------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (5, 9), (8, 1000), (7, 13)])
def test_any_size_comes_back_the_same_size(engine, shape):
    rgb = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)
    out = engine.stylize(rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8


def test_padding_matches_the_reference(generator, fp32, photos):
    """Sizes that are no multiple of 4 are padded by reflection, like pad_to_multiple."""
    rgb = load_rgb(photos / "chelsea.png")[:157, :203]
    assert np.abs(fp32.stylize(rgb).astype(int) - untiled(generator, rgb)).max() <= 1


def test_stylizer_passes_threads_and_budget(photos):
    from anime_cli.stylize.session import Stylizer

    st = Stylizer.from_style("hayao", threads=1, precision="fp32")
    assert st.threads == 1
    rgb = load_rgb(photos / "rocket.jpg")[:96, :128]
    full, plan = st.render(rgb)
    assert plan.name == "strips" and not plan.compact
    lean, plan = st.render(rgb, budget_bytes=0)  # nothing fits: the least-memory plan, still faithful
    assert not plan.fits
    assert psnr(lean, full) >= 50


def test_concurrent_calls_give_the_same_pictures(photos):
    """Two threads stylizing at once (a batch's two lanes) run on two engines
    sharing the cores; each picture is the one a lone call makes."""
    import threading

    from anime_cli.stylize.session import Stylizer

    st = Stylizer.from_style("hayao", threads=2)
    pics = [load_rgb(photos / "chelsea.png")[:160, :200], load_rgb(photos / "rocket.jpg")[:128, :176]]
    alone = [st.stylize(p) for p in pics]
    together = [None, None]

    def lane(k):
        with st.cores.busy():
            together[k] = st.stylize(pics[k])

    threads = [threading.Thread(target=lane, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together):
        assert np.array_equal(a, b)


def test_cancel_stops_a_run_and_the_engine_stays_usable(generator, engine, photos):
    import threading

    rgb = load_rgb(photos / "coffee.png")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(tiles.Cancelled):
        engine.stylize(rgb, cancel=cancel)
    # set mid-run, from another thread, while a leaner plan streams: the run stops there
    cancel.clear()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(tiles.Cancelled):
        engine.stylize(rgb, budget_bytes=0, cancel=cancel)
    assert psnr(engine.stylize(rgb), untiled(generator, rgb)) >= 40


def test_cores_are_shared_among_busy_files():
    cores = tiles.Cores(4)
    assert cores.share() == 4
    with cores.busy(), cores.busy():
        assert cores.share() == 2
        with cores.busy(), cores.busy(), cores.busy():
            assert cores.share() == 1
    assert cores.share() == 4


# -- the planner -----------------------------------------------------------------


def test_planner_fits_the_budget_and_prefers_less_recomputation(fp32):
    h, w = 3000, 4000  # planning only: nothing runs
    full = fp32.make_plan(h, w, None)
    assert full.name == "strips" and full.passes == pytest.approx(1.0)
    previous = None
    for mib in (2048, 1024, 700, 500, 300):
        plan = fp32.make_plan(h, w, mib << 20)
        if plan.fits:
            assert plan.bytes <= mib << 20
        if previous is not None:  # less memory never buys fewer passes
            assert plan.passes >= previous.passes - 1e-9
        previous = plan
    least = fp32.make_plan(h, w, 0)
    assert not least.fits and least.name == "stream"
    assert least.bytes < full.bytes


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_plan_nearly_as_fast_for_much_less_memory_is_taken(paprika, precision):
    """paprika at 1280 x 960 (the default size of a 4:3 photo): storing every
    layer needs ~430 MiB; recomputing its cheap layers costs 5% more passes
    and holds ~140 MiB less, which the planner takes. Never for 8-bit storage
    (memory alone keeps fp32 exact), never beyond 10% more passes."""
    from anime_cli.engine.plan import Planner

    _, _, layers = paprika
    engine = tiles.Engine(layers, threads=2, precision=precision)
    geo = engine.geometry(960, 1280)
    strips = Planner(geo).plan(None)
    plan = engine.make_plan(960, 1280, None)
    assert strips.name == "strips" and plan.name == "stream" and not plan.compact
    assert plan.passes <= 1.1 and plan.bytes <= strips.bytes - (100 << 20), plan.describe()
    assert engine.make_plan(960, 1280, 700 << 20) == plan


def test_a_process_pinned_to_one_core_plans_for_one_thread(tmp_path):
    """`taskset -c 0 anime-cli ...`: the default threads are the cores the process may use."""
    import json
    import os
    import subprocess

    from helpers import CLI, make_photo

    src = make_photo(tmp_path / "p.jpg", (3000, 2000), fmt="JPEG")

    def planned(*args, cores=None):
        pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
        p = subprocess.run([*CLI, "convert", src, "-o", tmp_path / "out", "--dry-run", "--json", *args],
                           capture_output=True, text=True, preexec_fn=pin, timeout=300)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)["estimated_peak_mb"]

    one = planned(cores={min(os.sched_getaffinity(0))})  # what the process holds varies by a MB or so
    assert abs(one - planned("--threads", "1")) < 5
    if len(os.sched_getaffinity(0)) > 1:
        assert planned("--threads", "2") - one > 20  # the plan does follow the thread count


# -- what the pipeline asks before and during a call -----------------------------


@pytest.mark.parametrize("budget", [None, 0])
def test_progress_comes_strip_by_strip_and_adds_up_to_work(photos, monkeypatch, budget):
    """The units a call reports add up to work() for its size and budget: the
    picture's pixels for one pass of the network, more when layers are recomputed."""
    import threading

    from anime_cli.stylize.session import Stylizer

    monkeypatch.setattr(geometry, "STRIP_BYTES", 64 << 10)  # several strips a pass
    st = Stylizer.from_style("hayao", threads=2, precision="fp32")
    rgb = load_rgb(photos / "chelsea.png")[:150, :203]
    calls, lock = [], threading.Lock()

    def progress(units):
        with lock:
            calls.append(units)

    st.stylize(rgb, budget, progress=progress)
    total = st.work(150, 203, budget)
    assert sum(calls) == total and all(u > 0 for u in calls)
    assert len(calls) > 30  # every pass, several strips each
    if budget is None:
        assert abs(total - 150 * 203) <= 30  # one pass (each pass's share is rounded)
    else:
        assert total >= 150 * 203 - 30  # recomputed layers count again
    assert st.work(3000, 4000, 300 << 20) > 1.5 * st.work(3000, 4000)  # a stream plan on a big picture


@pytest.mark.parametrize("precision", PRECISIONS)
def test_min_bytes_is_the_least_memory_plan_and_fits_itself(precision):
    from anime_cli.stylize.session import Stylizer

    st = Stylizer.from_style("hayao", threads=2, precision=precision)
    h, w = 3000, 4000  # planning only
    least, fastest = st.min_bytes(h, w), st.fastest_bytes(h, w)
    assert 3 * h * w < least < fastest / 2
    assert st.engine.picture_plan(h, w, least).fits  # a budget of min_bytes is enough
    assert not st.engine.picture_plan(h, w, least - (8 << 20)).fits


def test_a_stand_in_style_model_converts_a_file(tmp_path):
    """What StyleModel promises: anything with its methods runs a Converter."""
    from anime_cli import Converter, Options
    from anime_cli.inputs.discover import Job
    from helpers import Identity, make_photo

    src = make_photo(tmp_path / "p.png", (96, 64))
    rec = Converter(Identity(), Options(output_dir=tmp_path / "out", face_enhance=False)).convert(
        Job(str(src), src, Path("p.png")))
    assert rec.status == "ok" and rec.output_size == [96, 64]
    assert np.array_equal(load_rgb(rec.output), load_rgb(src))


# -- operations of the other families ----------------------------------------------


def tf_legacy_x2_reference(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow 1's legacy bilinear x2, as the weights README defines it: output
    i samples input i/2; i0 = floor, i1 = min(i0 + 1, n - 1), weight pos - i0."""
    for d in (2, 3):
        n = x.shape[d]
        pos = torch.arange(2 * n) / 2
        i0 = pos.floor().long()
        i1 = (i0 + 1).clamp(max=n - 1)
        shape = [1, 1, 1, 1]
        shape[d] = -1
        a, b = x.index_select(d, i0), x.index_select(d, i1)
        x = a + (b - a) * (pos - i0).view(shape)
    return x


def family_layers(seed=0):
    """A small network of the v1/v3 kind: instance norms, a stride-2 conv padded
    on the top and left only, a legacy x2, a skip across the two resolutions."""
    from anime_cli.engine.layers import Layer

    g = torch.Generator().manual_seed(seed)

    def layer(name, cin, cout, k, pad, stride=1, norm=True, **kw):
        w = torch.randn(cout, cin, k, k, generator=g) * (2 / (cin * k * k)) ** 0.5
        gamma = torch.rand(cout, generator=g) + 0.5 if norm else None
        beta = torch.randn(cout, generator=g) * 0.1 if norm else None
        return Layer(name, w, None, k, stride, pad, 1, gamma, beta, 1e-5, kw.pop("lrelu", norm),
                     norm="instance" if norm else None, **kw)

    return [layer("c0", 3, 8, 7, (3, 3, 3, 3)),
            layer("down", 8, 16, 3, (1, 0, 1, 0), stride=2),
            layer("up", 16, 8, 3, (1, 1, 1, 1), upsample="tf", residual=0, lrelu=False),
            layer("out", 8, 3, 1, (0, 0, 0, 0), norm=False, tanh=True)]


def family_eager(layers, x):
    def conv(L, x):
        return F.conv2d(F.pad(x, L.pad, mode="reflect"), L.weight, stride=L.stride)

    def inorm(L, y):
        y = F.instance_norm(y, eps=L.eps) * L.gamma.view(1, -1, 1, 1) + L.beta.view(1, -1, 1, 1)
        return F.leaky_relu(y, 0.2) if L.lrelu else y

    c0, down, up, out = layers
    x0 = inorm(c0, conv(c0, x))
    x1 = inorm(down, conv(down, x0))
    x2 = inorm(up, conv(up, tf_legacy_x2_reference(x1))) + x0
    return torch.tanh(conv(out, x2))


@pytest.mark.parametrize("h,w", [(36, 52), (100, 36), (8, 8)])
def test_instance_norm_legacy_resize_and_one_sided_stride_are_exact(monkeypatch, h, w):
    """Every plan (every layer stored, or recomputed from any checkpoints), in
    strips of a few rows, gives the eager network's output in float32."""
    monkeypatch.setattr(geometry, "STRIP_BYTES", 4 << 10)
    monkeypatch.setattr(geometry, "STREAM_BYTES", 2 << 10)
    layers = family_layers()
    engine = tiles.Engine(layers, threads=2, precision="fp32")
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h + w)) * 2 - 1
    with torch.inference_mode():
        ref = family_eager(layers, x)
    assert_exact(engine, x, ref, random_plans(engine, h, w, count=4))
    assert (engine.run(x, 0) - ref).abs().max().item() < 1e-4  # the least-memory plan


# -- AnimeGANv3 tiny ("cute") ---------------------------------------------------------


def v3_tiny_eager(sd, x):
    """AnimeGANv3 tiny written out from the weights README, whole picture, float32."""
    def c(key, x, s=1):
        w = sd[key + ".weight"]
        k = w.shape[-1]
        total = max(k - s, 0)
        pad = (-(-total // 2), total // 2) * 2  # the odd pixel on the top and left
        return F.conv2d(F.pad(x, pad, mode="reflect") if total else x, w, sd.get(key + ".bias"), stride=s)

    def L(x):
        return F.leaky_relu(x, 0.2)

    up = tf_legacy_x2_reference
    x0 = L(c("base.0", x))
    x1 = L(c("base.2", L(c("base.1", x0, 2))))
    x2 = L(c("base.4", L(c("base.3", x1, 2))))
    x3 = L(c("base.6", L(c("base.5", x2, 2))))
    x4 = L(c("base.8", L(c("base.7", x3, 2))))
    x4 = L(c("base.11", L(c("base.10", L(c("base.9", x4))))) + x4)
    x4 = L(c("base.14", L(c("base.13", L(c("base.12", x4))))) + x4)
    y = L(c("main.0", up(x4))) + x3
    y = L(c("main.2", L(c("main.1", y))))
    y = L(c("main.3", up(y))) + x2
    y = L(c("main.5", L(c("main.4", y))))
    y = L(c("main.6", up(y))) + x1
    y = L(c("main.8", L(c("main.7", y))))
    y = L(c("main.9", up(y))) + x0
    y = c("main.10", y)
    tx = c("main.11", y)
    mean, var = y.mean((2, 3), keepdim=True), y.var((2, 3), keepdim=True, unbiased=False)
    tmean, tvar = tx.mean((2, 3), keepdim=True), tx.var((2, 3), keepdim=True, unbiased=False)
    y = L((y - mean) / torch.sqrt(var + 1e-5) * torch.sqrt(tvar + 1e-5) + tmean)
    return torch.tanh(c("main.12", y))


def shared_weights(name: str) -> dict:
    """A state dict from ../shared/weights (the tests compare against its README's layer lists)."""
    from helpers import SHARED

    path = SHARED / "weights" / f"{name}.pt"
    if not path.is_file():
        pytest.fail(f"{path} not found")
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def cute():
    from anime_cli.models.animeganv3 import tiny_layers as v3_tiny_layers

    sd = shared_weights("animeganv3_tiny_cute")
    return sd, v3_tiny_layers(sd)


def test_v3_tiny_is_exact_on_every_plan(cute, monkeypatch, photos):
    """float32: the engine equals the eager network whatever is stored or
    recomputed, in strips of a few rows (~100 dB and more)."""
    monkeypatch.setattr(geometry, "STRIP_BYTES", 32 << 10)
    monkeypatch.setattr(geometry, "STREAM_BYTES", 16 << 10)
    sd, layers = cute
    engine = tiles.Engine(layers, threads=2, precision="fp32")
    x = tensor(load_rgb(photos / "astronaut.png")[40:136, 100:180])  # 96 x 80
    with torch.inference_mode():
        ref = v3_tiny_eager(sd, x)
    assert_exact(engine, x, ref, random_plans(engine, 96, 80, count=3) + [engine.make_plan(96, 80, 0)])


@pytest.mark.parametrize("name", ["portrait", "chelsea.png"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_v3_tiny_bf16_and_odd_sizes(cute, photos, name, precision):
    """Any size (padded at the right and bottom to multiples of 16, then
    cropped), bf16 within 45 dB of the eager float32 network, no seams."""
    sd, layers = cute
    rgb = portrait(photos, 200)[:197, :183] if name == "portrait" else load_rgb(photos / name)[:205, :301]
    h, w = rgb.shape[:2]
    x = tensor(rgb)
    padded = torch.nn.functional.pad(x, (0, -w % 16, 0, -h % 16), mode="reflect")
    with torch.inference_mode():
        y = v3_tiny_eager(sd, padded)[0, :, :h, :w]
    ref = y.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    out = tiles.Engine(layers, threads=2, precision=precision).stylize(rgb)
    assert psnr(out, ref) >= DB[precision], precision
    assert_no_seam(out, ref)


def test_a_stylizer_runs_v3_tiny_from_its_weights_file(cute, photos):
    from anime_cli.stylize.session import Stylizer
    from helpers import SHARED

    sd, layers = cute
    st = Stylizer.from_weights(SHARED / "weights" / "animeganv3_tiny_cute.pt", threads=2)
    rgb = load_rgb(photos / "chelsea.png")[:160, :224]
    with torch.inference_mode():
        y = v3_tiny_eager(sd, tensor(rgb))[0]
    ref = y.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert psnr(st.stylize(rgb), ref) >= 45
    assert st.engine.multiple == 16 and st.min_bytes(3000, 4000) < st.fastest_bytes(3000, 4000)


# -- AnimeGANv3 (hayao-v3, shinkai) ---------------------------------------------------


def v3_eager(sd, x):
    """AnimeGANv3 written out from the weights README, whole picture, float32."""
    def conv(w, x, s=1, bias=None):
        k = w.shape[-1]
        total = max(k - s, 0)
        pad = (-(-total // 2), total // 2) * 2
        return F.conv2d(F.pad(x, pad, mode="reflect") if total else x, w, bias, stride=s)

    def stats(t):
        return t.mean((2, 3), keepdim=True), t.var((2, 3), keepdim=True, unbiased=False)

    def lade(key, x, s=1):
        y = conv(sd[key + ".conv.weight"], x, s)
        (m, v), (tm, tv) = stats(y), stats(F.conv2d(y, sd[key + ".lade.weight"]))
        return F.leaky_relu((y - m) / torch.sqrt(v + 1e-5) * torch.sqrt(tv + 1e-5) + tm, 0.2)

    x0 = lade("b0", x)
    x1 = lade("b2", lade("b1", x0, 2))
    x2 = lade("b4", lade("b3", x1, 2))
    x3 = lade("b6", lade("b5", x2, 2))
    a = F.conv2d(F.conv2d(x3, sd["ea.conv_in.weight"]), sd["ea.mk.weight"])
    a = torch.softmax(a.flatten(2), dim=2).view_as(a)
    a = a / (1e-9 + a.sum(dim=1, keepdim=True))
    y = F.conv2d(F.conv2d(a, sd["ea.mv.weight"]), sd["ea.conv_out.weight"], sd["ea.conv_out.bias"])
    m = F.leaky_relu(y + x3, 0.2)
    up = tf_legacy_x2_reference
    m = lade("d1", lade("d0", up(m)) + x2)
    m = lade("d3", lade("d2", up(m)) + x1)
    m = lade("d5", lade("d4", up(m)) + x0)
    return torch.tanh(conv(sd["out.weight"], m))


@pytest.fixture(scope="module", params=["animeganv3_shinkai37", "animeganv3_hayao36"])
def v3(request):
    from anime_cli.models import layers_for

    sd = shared_weights(request.param)
    return sd, layers_for(sd)


def test_v3_is_exact_on_every_plan(v3, monkeypatch, photos):
    monkeypatch.setattr(geometry, "STRIP_BYTES", 64 << 10)
    monkeypatch.setattr(geometry, "STREAM_BYTES", 32 << 10)
    sd, layers = v3
    engine = tiles.Engine(layers, threads=2, precision="fp32")
    x = tensor(load_rgb(photos / "astronaut.png")[40:120, 100:204])  # 80 x 104
    with torch.inference_mode():
        ref = v3_eager(sd, x)
    assert_exact(engine, x, ref, random_plans(engine, 80, 104, count=3))


@pytest.mark.parametrize("name", ["portrait", "coffee.png"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_v3_bf16_and_odd_sizes(v3, photos, name, precision):
    sd, layers = v3
    rgb = portrait(photos, 200)[:197, :183] if name == "portrait" else load_rgb(photos / name)[:205, :301]
    h, w = rgb.shape[:2]
    padded = torch.nn.functional.pad(tensor(rgb), (0, -w % 8, 0, -h % 8), mode="reflect")
    with torch.inference_mode():
        y = v3_eager(sd, padded)[0, :, :h, :w]
    ref = y.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    out = tiles.Engine(layers, threads=2, precision=precision).stylize(rgb)
    assert psnr(out, ref) >= DB[precision], precision
    assert_no_seam(out, ref)


def test_a_stylizer_runs_v3_from_its_weights_file(v3, photos, tmp_path):
    from anime_cli.stylize.session import Stylizer
    from anime_cli.weights.catalog import WeightsError

    sd, _ = v3
    torch.save(sd, tmp_path / "v3.pt")
    st = Stylizer.from_weights(tmp_path / "v3.pt", threads=2)
    rgb = load_rgb(photos / "rocket.jpg")[:120, :176]
    with torch.inference_mode():
        y = v3_eager(sd, tensor(rgb))[0]
    ref = y.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert psnr(st.stylize(rgb), ref) >= 45 and st.engine.multiple == 8
    torch.save({**sd, "extra.weight": torch.zeros(1)}, tmp_path / "odd.pt")
    with pytest.raises(WeightsError, match="unexpected key extra.weight"):
        Stylizer.from_weights(tmp_path / "odd.pt")


# -- AnimeGAN v1 (paprika) ------------------------------------------------------------


@pytest.fixture(scope="module")
def paprika():
    """The state dict, its eager module (models.animeganv1, whole picture, float32) and its layers."""
    from anime_cli import models
    from anime_cli.models import layers_for

    sd = shared_weights("animeganv1_paprika")
    return sd, models.load(sd, family="animeganv1"), layers_for(sd)


def v1_reference(module, rgb: np.ndarray) -> np.ndarray:
    """The eager module on the picture padded at the right and bottom to multiples of 4, cropped back."""
    h, w = rgb.shape[:2]
    padded = torch.nn.functional.pad(tensor(rgb), (0, -w % 4, 0, -h % 4), mode="reflect")
    with torch.inference_mode():
        y = module(padded)[0, :, :h, :w]
    return y.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def test_v1_is_exact_on_every_plan(paprika, monkeypatch, photos):
    """float32: whatever is stored or recomputed, in strips of a few rows
    (band edges inside the Down blocks' branch and its every-second-pixel
    input), and the least-memory stream plan, give the eager module's output."""
    monkeypatch.setattr(geometry, "STRIP_BYTES", 64 << 10)
    monkeypatch.setattr(geometry, "STREAM_BYTES", 32 << 10)
    sd, module, layers = paprika
    engine = tiles.Engine(layers, threads=2, precision="fp32")
    x = tensor(load_rgb(photos / "astronaut.png")[40:120, 100:204])  # 80 x 104
    with torch.inference_mode():
        ref = module(x)
    least = engine.make_plan(80, 104, 0)
    assert least.name == "stream"
    assert_exact(engine, x, ref, random_plans(engine, 80, 104, count=3) + [least])


@pytest.mark.parametrize("name", ["portrait", "coffee.png"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_v1_bf16_and_odd_sizes(paprika, photos, name, precision):
    """Any size (padded at the right and bottom to multiples of 4, then
    cropped): fp32 within 80 dB and bf16 within 45 dB of the eager float32
    module, no seams."""
    _, module, layers = paprika
    rgb = portrait(photos, 200)[:197, :183] if name == "portrait" else load_rgb(photos / name)[:205, :301]
    ref = v1_reference(module, rgb)
    out = tiles.Engine(layers, threads=2, precision=precision).stylize(rgb)
    assert psnr(out, ref) >= DB[precision], precision
    assert_no_seam(out, ref)


def test_a_stylizer_runs_v1_by_name_and_from_its_weights_file(paprika, photos, tmp_path):
    from anime_cli.stylize.session import Stylizer
    from anime_cli.weights.catalog import WeightsError
    from helpers import SHARED

    sd, module, _ = paprika
    rgb = load_rgb(photos / "rocket.jpg")[:122, :178]
    ref = v1_reference(module, rgb)
    for st in (Stylizer.from_style("paprika", threads=2),
               Stylizer.from_weights(SHARED / "weights" / "animeganv1_paprika.pt", threads=2)):
        assert psnr(st.stylize(rgb), ref) >= 45 and st.engine.multiple == 4
    assert st.min_bytes(3000, 4000) < st.fastest_bytes(3000, 4000)
    torch.save({**sd, "extra.weight": torch.zeros(1)}, tmp_path / "odd.pt")
    with pytest.raises(WeightsError, match="unexpected key extra.weight"):
        Stylizer.from_weights(tmp_path / "odd.pt")
