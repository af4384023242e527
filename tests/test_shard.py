"""--shard K/N: a partition by a hash of each file's relative path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anime_cli.inputs.discover import discover
from anime_cli.run.shard import Shard, ShardError, parse, shard_of


def names(n: int) -> list[str]:
    return [f"album{i % 7}/IMG_{i:05d}.jpg" for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_partition_the_batch(n):
    files = names(500)
    shards = [Shard(k, n).select(files, rel=lambda f: f) for k in range(1, n + 1)]
    assert sorted(f for s in shards for f in s) == sorted(files)  # the union is the whole
    assert sum(map(len, shards)) == len(files)  # and no file is in two shards
    if n > 1:  # and roughly even
        assert min(map(len, shards)) > len(files) / n * 0.7


def test_shards_of_a_real_walk(tmp_path):
    for i in range(40):
        (tmp_path / f"d{i % 3}").mkdir(exist_ok=True)
        (tmp_path / f"d{i % 3}" / f"{i}.jpg").write_bytes(b"x")
    jobs = discover([str(tmp_path)], recursive=True)
    picked = [j.input for k in (1, 2, 3) for j in parse(f"{k}/3").select(jobs)]
    assert sorted(picked) == sorted(j.input for j in jobs)


def test_adding_files_moves_few():
    before = {f: shard_of(f, 7) for f in names(1000)}
    after = {f: shard_of(f, 7) for f in names(1100)}  # 100 files added
    assert all(after[f] == s for f, s in before.items())  # no old file moves at all


def test_the_same_tree_mounted_in_two_places_splits_the_same(tmp_path):
    """Machines that mount one share at different paths must agree on who does what."""
    for mount in ("mnt/a", "data"):
        for f in names(30) + [os.fsdecode(b"caf\xe9.jpg")]:
            (tmp_path / mount / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / mount / f).write_bytes(b"x")

    def split(mount):
        jobs = discover([str(tmp_path / mount)], recursive=True)
        return [sorted(str(j.rel) for j in parse(f"{k}/4").select(jobs)) for k in range(1, 5)]

    assert split("mnt/a") == split("data")
    assert all(split("data"))  # every shard has work


def test_known_values_stay_stable_across_versions():
    # If these change, concurrent processes of two versions would overlap: don't.
    assert [shard_of(f"{i}.jpg", 3) for i in range(6)] == [1, 3, 3, 3, 2, 3]
    assert [shard_of(f"{i}.jpg", 7) for i in range(6)] == [6, 7, 7, 1, 4, 6]
    assert shard_of("photo.jpg", 1) == 1


@pytest.mark.parametrize("text", ["", "1", "0/3", "4/3", "3/0", "a/b", "1/2/3", "-1/2", "1/9999999"])
def test_bad_values_are_one_line_errors(text):
    with pytest.raises(ShardError) as e:
        parse(text)
    assert "\n" not in str(e.value) and "--shard" in str(e.value)


def test_good_values():
    assert parse("1/1") == Shard(1, 1)
    assert parse(" 3 / 7 ") == Shard(3, 7)
    assert str(parse("2/4")) == "2/4"


def test_two_shard_processes_give_what_one_gives(tmp_path, photos, stylizer):
    """The same outputs and records, whether one Converter runs the batch or two
    run a shard each into the same folder (their logs concatenate into one)."""
    import numpy as np

    from anime_cli.run.converter import Converter, Options
    from helpers import SAMPLES, load_rgb

    src = tmp_path / "in"
    src.mkdir()
    for name in SAMPLES:
        (src / name).write_bytes((photos / name).read_bytes())
    (src / "notes.jpg").write_text("not a photo")
    jobs = discover([str(src)], False)

    def run(out, part):
        opts = Options(output_dir=out, max_side=64, face_enhance=False, pipelined=False)
        return list(Converter(stylizer, opts).run(part))

    whole = run(tmp_path / "one", jobs)
    split = [r for k in (1, 2) for r in run(tmp_path / "two", parse(f"{k}/2").select(jobs))]
    fields = lambda r: (r.input, r.status, r.reason, r.output_size, Path(r.output).name if r.output else None)
    assert sorted(map(fields, whole)) == sorted(map(fields, split))
    for r in whole:
        if r.status == "ok":
            assert np.array_equal(load_rgb(r.output), load_rgb(tmp_path / "two" / Path(r.output).name))
