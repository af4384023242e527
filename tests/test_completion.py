"""Shell completion: scripts for bash, zsh and fish, completing style names
and --format values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("anime-cli")  # the installed command: completion keys on its name
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="anime-cli is not installed in this environment")


def _run(*args, **env):
    e = dict(os.environ, _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1", **env)
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=e)


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o default -F _anime_cli_completion anime-cli"),
                                          ("zsh", "#compdef anime-cli"), ("fish", "complete --command anime-cli")])
def test_a_completion_script_for_each_shell(shell, marker):
    p = _run("--show-completion", shell)
    assert p.returncode == 0, p.stderr
    assert marker in p.stdout


def _complete(line: str) -> list[str]:
    words = line.split(" ")
    p = _run(_ANIME_CLI_COMPLETE="complete_bash", COMP_WORDS=line, COMP_CWORD=str(len(words) - 1))
    return p.stdout.split()


def test_style_names_complete():
    assert _complete("anime-cli convert --style s") == ["shinkai"]
    assert set(_complete("anime-cli convert --style ")) >= {"hayao", "hayao-v3", "shinkai", "cute", "paprika"}


def test_format_values_complete():
    assert _complete("anime-cli convert --format w") == ["webp"]
    assert _complete("anime-cli convert --precision b") == ["bf16"]
