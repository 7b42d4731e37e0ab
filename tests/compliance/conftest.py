"""Shared fixtures: the esm binary under test and fresh data dirs made with `esm init`."""

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
ESM = pathlib.Path(os.environ.get("ESM_BIN", ROOT / "target" / "debug" / "esm"))
TIMEOUT = 60


def run(*args, cwd=None, env=None, check=True, input=None):
    """Runs esm with a bounded time; returns the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ESM_")}
    full_env.update(env or {})
    p = subprocess.run(
        [str(ESM), *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        input=input,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"esm {' '.join(map(str, args))} exited {p.returncode}: {p.stderr}")
    return p


@pytest.fixture(scope="session")
def esm_bin():
    assert ESM.exists(), f"{ESM} is missing: build it first (tests/run does)"
    return ESM


def make_ca(tmp_path, algorithm="ec-p256", trust_domain="example.org"):
    data = tmp_path / "esm-data"
    run("init", "--trust-domain", trust_domain, "--dir", data, "--key-algorithm", algorithm)
    return data


@pytest.fixture
def ca(tmp_path, esm_bin):
    return make_ca(tmp_path)
