"""Fixtures of the engine tests: the reference toy runs that several tests compare with."""

from __future__ import annotations

import pytest
from engine_runs import BASE_ARGS, ToyRun, run_toy


@pytest.fixture(scope="session")
def single_process_run(tmp_path_factory) -> ToyRun:
    """The uninterrupted 1-process run (global batch 8) that distributed runs are compared with."""
    return run_toy(tmp_path_factory.mktemp("single"), *BASE_ARGS, "--size_batch", "8").check()


@pytest.fixture(scope="session")
def two_process_run(tmp_path_factory) -> ToyRun:
    """The same run on 2 gloo ranks with batch 4 each (same global batch), one loader worker per rank."""
    out = tmp_path_factory.mktemp("two")
    return run_toy(out, *BASE_ARGS, "--size_batch", "4", "--n_workers", "1", nproc=2).check()
