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


def test_auto_without_bfloat16_chooses_fp32(tmp_path):
    src = make_photo(tmp_path / "p.jpg")
    code, out, err = run_cli("convert", src, "-o", tmp_path / "out", "--no-face-enhance", "--dry-run", "--json",
                             env=NO_BF16)
    assert code == 0, err
    import json

    assert json.loads(out)["status"] == "planned"
    code, _, err = run_cli("convert", src, "-o", tmp_path / "out", "--no-face-enhance", "--precision", "fp32",
                           env=NO_BF16)
    assert code == 0, err


def test_the_switch_is_what_the_engine_sees(monkeypatch):
    from anime_cli.engine import cpu

    for f in (cpu.bf16_works, cpu.native_bf16):
        f.cache_clear()
    monkeypatch.setenv("ANIME_CLI_NO_BF16", "1")
    try:
        assert not cpu.bf16_works() and not cpu.native_bf16()
        assert cpu.resolve_precision("auto") == "fp32"
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
