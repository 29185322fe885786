"""Shared fixtures: a tiny random Nano-EmoX (model, processor, saved folder) and generated media."""

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny():
    """(model, processor) of the tiny random Nano-EmoX, in eval mode. Tests must not modify the model in place."""
    from modeling_nanoemox.tiny import build_tiny

    return build_tiny(seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny):
    return tiny[0]


@pytest.fixture(scope="session")
def tiny_processor(tiny):
    return tiny[1]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny):
    """The tiny model + processor saved as a folder (what `nanoemox create-tiny` writes)."""
    path = tmp_path_factory.mktemp("tiny-model")
    model, processor = tiny
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)
