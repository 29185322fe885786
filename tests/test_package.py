"""The package face (`modeling_nanoemox/__init__.py`) and the import graph: importing the package or the remote-code
files pulls no media or training library, the Auto classes are registered, the other names load on first use, and
`data` never imports `evaluation` (the graph is one-way)."""

import json
import subprocess
import sys

import pytest

import modeling_nanoemox

HEAVY = ("av", "cv2", "trl", "gradio")


def run_python(code: str) -> dict:
    """Runs `code` in a fresh interpreter (nothing imported yet) and returns the JSON it prints last."""
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_import_pulls_no_media_or_training_library():
    loaded = run_python(
        "import json, sys\n"
        "import modeling_nanoemox, modeling_nanoemox.modeling_nanoemox, modeling_nanoemox.configuration_nanoemox\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in " + repr(HEAVY) + ")))"
    )
    assert loaded == []


def test_importing_the_package_registers_the_auto_classes():
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    config = AutoConfig.for_model(modeling_nanoemox.NanoEmoXConfig.model_type)
    assert isinstance(config, modeling_nanoemox.NanoEmoXConfig)
    for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
        assert auto_class._model_mapping[type(config)] is modeling_nanoemox.NanoEmoXForConditionalGeneration
    assert PROCESSOR_MAPPING[type(config)] is modeling_nanoemox.NanoEmoXProcessor


def test_other_public_names_load_on_first_use():
    state = run_python(
        "import json, sys\n"
        "import modeling_nanoemox as package\n"
        "before = 'modeling_nanoemox.composition_nanoemox' in sys.modules\n"
        "tokens = package.DEFAULT_MODALITY_TOKENS\n"
        "print(json.dumps({'before': before, 'after': 'modeling_nanoemox.composition_nanoemox' in sys.modules,\n"
        "                  'video': tokens['video'], 'dir': sorted(set(package.__all__) - set(dir(package)))}))"
    )
    assert state == {"before": False, "after": True, "video": "<|emox_video|>", "dir": []}
    for name in modeling_nanoemox.__all__:
        assert getattr(modeling_nanoemox, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        modeling_nanoemox.not_a_name  # noqa: B018


def test_data_never_imports_evaluation():
    """evaluation reads manifests (it may import data); data imports nothing from evaluation: no cycle, so each
    package imports on its own and in any order."""
    loaded = run_python(
        "import json, sys\nimport modeling_nanoemox.data\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('modeling_nanoemox.'))))"
    )
    assert "modeling_nanoemox.data.adapters" in loaded and "modeling_nanoemox.data.chain_of_empathy" in loaded
    assert not [m for m in loaded if m.startswith("modeling_nanoemox.evaluation")]


def test_evaluation_imports_on_its_own():
    loaded = run_python(
        "import json, sys\nimport modeling_nanoemox.evaluation.parsing, modeling_nanoemox.evaluation\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('modeling_nanoemox.'))))"
    )
    assert "modeling_nanoemox.evaluation.scoring" in loaded
