"""The Dockerfile's promises, read with a real Dockerfile parser.

These tests hold the file to what the deployment relies on: pinned bases, a
numeric non-root user, no toolchain in the final stage, the entrypoint and
default command, a read-only root.  tests/image/ builds the image with podman
and runs it.
"""
from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest

dockerfile_parse = pytest.importorskip("dockerfile_parse", reason="pip install dockerfile-parse (test extra)")

ROOT = Path(__file__).resolve().parent.parent
TOOLCHAIN = re.compile(r"\b(apt-get|apt|apk|dnf|yum|gcc|g\+\+|cc|make|build-essential|rustc|cargo)\b")


@pytest.fixture(scope="module")
def instructions() -> list[dict]:
    parser = dockerfile_parse.DockerfileParser(path=str(ROOT / "Dockerfile"))
    return parser.structure


def _stages(instructions: list[dict]) -> list[list[dict]]:
    stages: list[list[dict]] = []
    for ins in instructions:
        if ins["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


@pytest.fixture(scope="module")
def final(instructions: list[dict]) -> list[dict]:
    return _stages(instructions)[-1]


def _values(stage: list[dict], instruction: str) -> list[str]:
    return [ins["value"] for ins in stage if ins["instruction"] == instruction]


def test_multi_stage_from_pinned_official_slim_python(instructions: list[dict]) -> None:
    froms = [ins["value"].split()[0] for ins in instructions if ins["instruction"] == "FROM"]
    assert len(froms) >= 2, "builder and final stage"
    for image in froms:
        name, _, tag = image.partition("@")[0].partition(":")
        assert name == "python", image
        assert tag and tag != "latest", f"{image}: pin a tag, never latest"
        assert re.fullmatch(r"3\.\d+(\.\d+)?-slim-\w+", tag), f"{image}: pin python minor and Debian release"


def test_final_stage_runs_as_fixed_numeric_non_root_user(final: list[dict]) -> None:
    users = _values(final, "USER")
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]
    assert uid == "65532"


def test_entrypoint_and_default_command(final: list[dict]) -> None:
    assert [json.loads(v) for v in _values(final, "ENTRYPOINT")] == [["prober"]]
    cmd = json.loads(_values(final, "CMD")[-1])
    assert cmd == ["serve", "--config", "/etc/prober/probes.yaml", "--listen", "0.0.0.0:9716"]
    assert any("9716" in v.split() for v in _values(final, "EXPOSE"))


def test_final_stage_installs_only_builder_wheels(final: list[dict]) -> None:
    runs = _values(final, "RUN")
    assert runs, "the final stage installs the wheels"
    for run in runs:
        assert not TOOLCHAIN.search(run), f"toolchain or package manager in the final stage: {run}"
        if "pip install" in run:
            assert "--no-index" in run and "from=builder" in run, run
    for copy in _values(final, "COPY") + _values(final, "ADD"):
        assert copy.startswith("--from="), f"the final stage copies from the build context: {copy}"


def test_read_only_root_filesystem_friendly(final: list[dict]) -> None:
    env = " ".join(_values(final, "ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PIP_NO_CACHE_DIR=1" in env


def test_dockerignore_keeps_the_context_to_what_the_builder_copies(instructions: list[dict]) -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        # Docker semantics: the last matching pattern wins, "!" re-includes.
        verdict = False
        for pat in patterns:
            negate = pat.startswith("!")
            pat = pat.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/") or fnmatch.fnmatch(path, pat.replace("**/", "*/")):
                verdict = not negate
        return verdict

    copied = [src for stage in _stages(instructions)[:-1] for v in _values(stage, "COPY")
              for src in v.split()[:-1] if not src.startswith("--")]
    assert copied, "the builder copies the project"
    for src in copied:
        assert not ignored(src.rstrip("/")), f".dockerignore hides {src}, which the builder copies"
        assert (ROOT / src).exists(), f"the builder copies {src}, which the repository lacks"
    for secret_or_noise in (".git", "tests", "bench", ".venv", "prober/__pycache__"):
        assert ignored(secret_or_noise), f".dockerignore lets {secret_or_noise} into the build context"
