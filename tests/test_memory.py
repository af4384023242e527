"""The memory budget holds for a whole process, measured from outside (the
process resets the kernel's high-water mark per file, so getrusage would
under-report it), with the features a user has on by default."""

from __future__ import annotations

import pytest
from PIL import Image

from helpers import CLI, PHOTOS, read_log, sampled_peak


@pytest.mark.slow
def test_full_resolution_with_faces_stays_inside_the_limit(tmp_path):
    """12 MP at --max-side 0 with faces on peaked at 976 MB when MTCNN ran over the
    whole picture; under a 900 MB limit it must now stay inside, face found."""
    src = tmp_path / "big.jpg"
    with Image.open(PHOTOS / "astronaut.png") as im:
        im.convert("RGB").resize((4000, 3000), Image.Resampling.LANCZOS).save(src, quality=92)
    code, peak, err = sampled_peak([*CLI, "convert", src, "-o", tmp_path / "out", "--max-side", "0",
                                    "--memory-limit", "900MB", "--log-file", tmp_path / "run.jsonl"])
    assert code == 0, err
    (rec,) = read_log(tmp_path / "run.jsonl")
    assert rec["faces"] >= 1
    assert peak < 900e6, f"true peak {peak / 1e6:.0f} MB over the 900 MB limit ({rec['plan']})"
