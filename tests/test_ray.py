"""The Ray Data runner: the same pictures and records as the in-process pipeline; S3 in and out.

One local Ray (2 CPUs) for the module, stopped in a finally; an S3-compatible
server (moto's server mode) on 127.0.0.1 for the round trip.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anime_cli.folder.database import is_store_file
from helpers import PHOTOS, SAMPLES, load_rgb, psnr, run_cli

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

COMPARED = ("status", "reason", "input_bytes", "input_format", "input_size", "decode_size", "output_size", "faces")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1; credentials in the environment before Ray
    starts, so its workers inherit them."""
    moto_server = pytest.importorskip("moto.server")
    ThreadedMotoServer = moto_server.ThreadedMotoServer

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def local_ray(s3):
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             object_store_memory=256 * 2**20)
    try:
        yield
    finally:
        ray.shutdown()


def hostile_folder(root: Path) -> Path:
    src = root / "in"
    src.mkdir()
    for name in SAMPLES:
        shutil.copy(PHOTOS / name, src / name)
    shutil.copy(PHOTOS / "coffee.png", src / "coffee_copy.png")  # identical bytes: computed once
    (src / "truncated.jpg").write_bytes((PHOTOS / "rocket.jpg").read_bytes()[:4000])
    (src / "notes.jpg").write_text("not a picture at all\n")
    return src


def test_ray_gives_the_pictures_and_records_of_the_pipeline(tmp_path, local_ray, stylizer, detector):
    from anime_cli.inputs.discover import discover
    from anime_cli.run.converter import Converter, Options
    from anime_cli.run.on_ray import convert_dataset

    src = hostile_folder(tmp_path)
    plain_out, ray_out = tmp_path / "plain", tmp_path / "ray"
    plain = list(Converter(stylizer, Options(output_dir=plain_out, max_side=128), detector)
                 .run(discover([str(src)], False)))
    got = list(convert_dataset([str(src)], str(ray_out), Options(max_side=128), threads=1))
    assert [r.input for r in got] == [r.input for r in plain]  # input order, one record each
    for p, r in zip(plain, got):
        if r.input.endswith("coffee_copy.png") or r.input.endswith("coffee.png"):  # which one computes may differ
            assert r.status == p.status == "ok" and r.output_size == p.output_size
            assert (r.input_bytes, r.input_format, r.input_size, r.style) == (p.input_bytes, p.input_format,
                                                                             p.input_size, p.style)
            continue
        assert {k: getattr(r, k) for k in COMPARED} == {k: getattr(p, k) for k in COMPARED}, r.input
        if p.status == "ok":
            assert Path(r.output) == ray_out / Path(p.output).relative_to(plain_out)
            assert psnr(load_rgb(r.output), load_rgb(p.output)) >= 60
            assert r.cached is False
        else:
            assert r.output is None and r.error
    coffee = [r for r in got if "coffee" in r.input]
    assert sorted(r.cached for r in coffee) == [False, True]  # identical files: one computed, one linked
    assert np.array_equal(load_rgb(coffee[0].output), load_rgb(coffee[1].output))
    assert psnr(load_rgb(coffee[0].output), load_rgb(plain_out / "coffee.png")) >= 60
    assert (ray_out / ".anime-cli.sqlite").is_file()  # no temporary left, nothing but the outputs
    assert sorted(p.name for p in ray_out.iterdir() if not is_store_file(p)) == [
        "astronaut.png", "chelsea.png", "coffee.png", "coffee_copy.png", "rocket.jpg"]

    # a rerun after a rename: the renamed file's output is linked from the cache, not
    # recomputed; the others are skipped as existing
    (src / "rocket.jpg").rename(src / "moved_rocket.jpg")
    again = {Path(r.input).name: r for r in convert_dataset([str(src)], str(ray_out), Options(max_side=128))}
    assert again["moved_rocket.jpg"].status == "ok" and again["moved_rocket.jpg"].cached
    assert (again["moved_rocket.jpg"].input_format, again["moved_rocket.jpg"].input_size) == ("JPEG", [640, 427])
    assert (ray_out / "moved_rocket.jpg").read_bytes() == (ray_out / "rocket.jpg").read_bytes()
    assert {n: r.status for n, r in again.items() if n.endswith(".png")} == dict.fromkeys(
        ["astronaut.png", "chelsea.png", "coffee.png", "coffee_copy.png"], "skipped")
    assert again["notes.jpg"].status == "error"


def test_ray_names_outputs_as_the_pipeline_does(tmp_path, local_ray, stylizer):
    """--name and the 255-byte rule, for computed files and for cache hits alike."""
    from anime_cli import Converter, Options, convert_dataset, discover

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(PHOTOS / "coffee.png", src / "a.png")
    shutil.copy(PHOTOS / "coffee.png", src / "b.png")  # identical: one of the two is a cache hit on Ray
    shutil.copy(PHOTOS / "rocket.jpg", src / ("é" * 118 + ".jpg"))  # 240 bytes: the pattern makes it too long
    opts = dict(max_side=64, name="{stem}_{style}-{width}x{height}", face_enhance=False)
    plain = list(Converter(stylizer, Options(output_dir=tmp_path / "plain", **opts)).run(discover([str(src)], False)))
    got = list(convert_dataset([str(src)], str(tmp_path / "ray"), Options(**opts), threads=1))
    names = lambda recs, root: [Path(r.output).relative_to(root).as_posix() for r in recs]  # noqa: E731
    assert names(got, tmp_path / "ray") == names(plain, tmp_path / "plain")
    assert names(plain, tmp_path / "plain")[:2] == ["a_hayao-64x43.png", "b_hayao-64x43.png"]
    assert all(len(Path(n).name.encode()) <= 255 for n in names(got, tmp_path / "ray"))
    assert names(got, tmp_path / "ray")[2].endswith("_hayao-64x43.jpg")  # the stem was cut, not the pattern
    assert sorted(r.cached for r in got) == [False, False, True]
    assert [r.output_size for r in got] == [r.output_size for r in plain]


def test_bad_inputs_are_one_line_errors_before_any_work(tmp_path):
    from anime_cli.inputs.discover import MissingInput
    from anime_cli.run.on_ray import RayError, convert_dataset

    with pytest.raises(RayError, match="cannot list the inputs"):
        convert_dataset(["nosuch://bucket/x"], str(tmp_path / "o"))
    with pytest.raises(MissingInput):
        convert_dataset([str(tmp_path / "absent")], str(tmp_path / "o"))


def test_a_cluster_address_nothing_answers_at_is_one_line_before_any_work(tmp_path):
    """ray.init retried a wrong address for minutes, printing warnings, and
    then the CLI died in a traceback."""
    for address in (f"127.0.0.1:{_free_port()}", f"ray://127.0.0.1:{_free_port()}"):
        code, _, err = run_cli("convert", PHOTOS / "rocket.jpg", "-o", tmp_path / "out", "--ray", address,
                               "--log-file", tmp_path / "run.jsonl")
        assert code == 2 and err.strip() == f"anime-cli: cannot reach Ray at {address} (Connection refused)", err
        assert not (tmp_path / "out").exists() and not (tmp_path / "run.jsonl").exists()


def test_s3_round_trip(tmp_path, local_ray, s3):
    boto3 = pytest.importorskip("boto3")

    from anime_cli.run.converter import Options
    from anime_cli.run.on_ray import convert_dataset

    client = boto3.client("s3", endpoint_url=f"http://{s3}")
    client.create_bucket(Bucket="photos")
    for name in ("chelsea.png", "rocket.jpg"):
        client.upload_file(str(PHOTOS / name), "photos", f"in/sub/{name}")
    client.put_object(Bucket="photos", Key="in/sub/notes.jpg", Body=b"text, not a photo")
    q = f"?endpoint_override={s3}&scheme=http&region=us-east-1"
    opts = Options(max_side=64, face_enhance=False)

    recs = list(convert_dataset([f"s3://photos/in{q}"], f"s3://photos/out{q}", opts, recursive=True))
    assert [(r.input, r.status, r.output) for r in recs] == [
        ("s3://photos/in/sub/chelsea.png", "ok", "s3://photos/out/sub/chelsea.png"),
        ("s3://photos/in/sub/notes.jpg", "error", None),
        ("s3://photos/in/sub/rocket.jpg", "ok", "s3://photos/out/sub/rocket.jpg")]
    for key, size in (("out/sub/chelsea.png", (64, 43)), ("out/sub/rocket.jpg", (64, 43))):
        local = tmp_path / Path(key).name
        client.download_file("photos", key, str(local))
        with Image.open(local) as im:
            assert im.size == size
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="photos", Prefix="out/")["Contents"]}
    assert keys == {"out/.anime-cli.sqlite", "out/sub/chelsea.png", "out/sub/rocket.jpg"}

    # the database went back to the bucket: a rerun knows both outputs
    again = list(convert_dataset([f"s3://photos/in{q}"], f"s3://photos/out{q}", opts, recursive=True))
    assert [(r.status, r.reason, r.cached) for r in again] == [
        ("skipped", "exists", True), ("error", "corrupt or not an image", False), ("skipped", "exists", True)]
