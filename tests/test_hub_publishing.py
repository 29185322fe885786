"""Publishing to the Hub (issue 15): what `push_to_hub` would upload, captured at the commit call (no network here)."""

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import HfApi, ModelCard, ModelCardData, RepoUrl, metadata_load
from huggingface_hub.errors import EntryNotFoundError
from safetensors import safe_open

from modeling_nanoemox import NanoEmoXConfig
from modeling_nanoemox.hub_nanoemox import push_folder_with_card, resolve_card
from modeling_nanoemox.model_card_nanoemox import (
    BASE_MODEL,
    CARD_END,
    CARD_START,
    PAPER_URL,
    read_training_summary,
    render_model_card,
    validate_training_summary,
    write_training_summary,
)

GENERIC_SENTENCE = "This is the model card of a 🤗 transformers model that has been pushed on the Hub."
MODEL_CODE = ("configuration_nanoemox.py", "modeling_nanoemox.py", "model_card_nanoemox.py", "hub_nanoemox.py")
PROCESSOR_FILES = ("processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                   "processing_nanoemox.py", "prompts_nanoemox.py", "media_nanoemox.py",
                   "face_detection_nanoemox.py", "threads_nanoemox.py")  # fmt: skip


class HubCapture:
    """Stands in for the Hub: records create_repo / create_branch / create_commit and serves a README.md."""

    def __init__(self, root: Path):
        self.root = root
        self.remote_card: str | None = None
        self.repos, self.branches, self.commits = [], [], []

    def create_repo(self, repo_id, **kwargs):
        self.repos.append((repo_id, kwargs))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, *, branch, **kwargs):
        self.branches.append((repo_id, branch))

    def create_commit(self, repo_id, operations, *, commit_message, **kwargs):
        folder = self.root / f"commit-{len(self.commits)}"
        for operation in operations:
            target = folder / operation.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            with operation.as_file() as source:
                target.write_bytes(source.read())
        self.commits.append(SimpleNamespace(repo_id=repo_id, message=commit_message, folder=folder, kwargs=kwargs,
                                            files=sorted(op.path_in_repo for op in operations)))  # fmt: skip
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0", oid="0" * 40)

    def load_card(self, repo_id, **kwargs):
        if self.remote_card is None:
            raise EntryNotFoundError(f"404: {repo_id} has no README.md")
        return ModelCard(self.remote_card)

    @property
    def last(self):
        return self.commits[-1]

    def readme(self) -> str:
        return (self.last.folder / "README.md").read_text(encoding="utf-8")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    capture = HubCapture(tmp_path / "hub")
    # Bound to the capture: a bound method set on the class is returned as it is, without the HfApi instance.
    for name in ("create_repo", "create_branch", "create_commit"):
        monkeypatch.setattr(HfApi, name, getattr(HubCapture, name).__get__(capture))
    monkeypatch.setattr(ModelCard, "load", classmethod(lambda cls, repo_id, **kw: capture.load_card(repo_id, **kw)))
    return capture


def card_metadata_of(text: str, path: Path) -> dict:
    path.write_text(text, encoding="utf-8")
    metadata = metadata_load(path)
    ModelCardData(**metadata)  # huggingface_hub's own parsing of every field (no network: `validate()` needs it)
    return metadata


def check_hub_metadata(metadata: dict):
    from transformers.pipelines import SUPPORTED_TASKS

    assert metadata["library_name"] == "transformers"
    assert metadata["license"] == "apache-2.0"
    assert metadata["pipeline_tag"] == "any-to-any" and "any-to-any" in SUPPORTED_TASKS
    assert "arxiv:2603.02123" in metadata["tags"] and "nano-emox" in metadata["tags"]
    assert "en" in metadata["language"]


# ---- model.push_to_hub / processor.push_to_hub ---------------------------------------------------------------------


def test_model_push_uploads_the_project_card_and_a_loadable_folder(tiny_model, tiny_processor, hub, tmp_path):
    tiny_model.push_to_hub("org/nano-emox-tiny", processor=tiny_processor, tags=["extra-tag"])
    assert hub.repos[0][0] == "org/nano-emox-tiny" and len(hub.commits) == 1
    files = set(hub.last.files)
    assert {"README.md", "config.json", "generation_config.json", "model.safetensors", *MODEL_CODE} <= files
    assert set(PROCESSOR_FILES) <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    assert hub.last.message == "Upload model and processor"

    folder = hub.last.folder
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_nanoemox.NanoEmoXForConditionalGeneration"
    assert config["auto_map"]["AutoModelForMultimodalLM"] == "modeling_nanoemox.NanoEmoXForConditionalGeneration"
    processor_config = json.loads((folder / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_nanoemox.NanoEmoXProcessor"
    assert (folder / "chat_template.jinja").read_text() == tiny_processor.chat_template
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert len(list(weights.keys())) > 100

    card = hub.readme()
    assert GENERIC_SENTENCE not in card
    assert CARD_START in card and CARD_END in card
    assert "| perception | `msa`" in card and "| interaction | `erg`" in card
    assert "&lt;think&gt; chain of empathy &lt;/think&gt;" in card  # visible on the Hub, not an HTML tag
    assert 'AutoModel.from_pretrained("org/nano-emox-tiny", trust_remote_code=True)' in card
    assert 'pipeline("any-to-any"' in card and PAPER_URL in card
    assert "randomly initialised" in card and "Not trained" in card
    metadata = card_metadata_of(card, tmp_path / "README.md")
    check_hub_metadata(metadata)
    assert "base_model" not in metadata and "base_model_relation" not in metadata  # a random model is no finetune
    assert metadata["language"] == ["en"]
    assert "extra-tag" in metadata["tags"]


REMOTE_PUSH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    for name in ("modeling_nanoemox", "nanoemox_processing", "processing"):
        sys.modules[name] = None  # the project's packages cannot be imported at all
    import torch
    from huggingface_hub import HfApi, ModelCard, RepoUrl
    from huggingface_hub.errors import EntryNotFoundError
    from transformers import AutoConfig, AutoModel, AutoModelForMultimodalLM, AutoProcessor

    folder, out_path = sys.argv[1:]
    commits = []

    def create_commit(api, repo_id, operations, *, commit_message, **kwargs):
        files = {}
        for operation in operations:
            with operation.as_file() as source:
                data = source.read()
            files[operation.path_in_repo] = data.decode() if operation.path_in_repo == "README.md" else len(data)
        commits.append({"repo_id": repo_id, "message": commit_message, "files": files})

    def load_card(cls, repo_id, **kwargs):
        raise EntryNotFoundError(f"404: {repo_id} has no README.md")

    HfApi.create_repo = lambda api, repo_id, **kwargs: RepoUrl(f"https://huggingface.co/{repo_id}")
    HfApi.create_commit = create_commit
    ModelCard.load = classmethod(load_card)

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    multimodal = AutoModelForMultimodalLM.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    checksum = sum(p.double().sum().item() for p in model.parameters())
    prompt = torch.tensor([[5, 6, 7, 8]])
    generated = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=2,
                               do_sample=False)
    model.push_to_hub("org/again", processor=processor)  # remote code publishing, still with our card
    processor.push_to_hub("org/processor-only")  # without the project: the files only, README.md left alone
    json.dump({"names": [type(o).__name__ for o in (config, model, multimodal, processor)], "checksum": checksum,
               "generated": generated.shape[1] - prompt.shape[1], "commits": commits}, open(out_path, "w"))
    """
)


def test_uploaded_folder_loads_as_remote_code_without_the_project(tiny_model, tiny_processor, hub, tmp_path):
    tiny_model.push_to_hub("org/nano-emox-tiny", processor=tiny_processor)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_PUSH_SCRIPT, str(hub.last.folder), str(tmp_path / "out.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["names"] == ["NanoEmoXConfig", "NanoEmoXForConditionalGeneration",
                            "NanoEmoXForConditionalGeneration", "NanoEmoXProcessor"]  # fmt: skip
    expected = sum(p.double().sum().item() for p in tiny_model.parameters())
    assert out["checksum"] == pytest.approx(expected, rel=1e-9)
    assert out["generated"] == 2
    again, processor_only = out["commits"]
    card = again["files"]["README.md"]
    assert CARD_START in card and GENERIC_SENTENCE not in card
    assert "| perception | `msa`" in card  # the prompts came from the folder's prompts_nanoemox.py
    assert {"hub_nanoemox.py", "model_card_nanoemox.py", "model.safetensors"} <= set(again["files"])
    assert "README.md" not in processor_only["files"] and "processor_config.json" in processor_only["files"]


def test_processor_push_writes_a_card_only_where_there_is_none(tiny_processor, hub, tmp_path):
    tiny_processor.push_to_hub("org/nano-emox-tiny")
    assert set(PROCESSOR_FILES) | {"README.md"} <= set(hub.last.files)
    assert "model.safetensors" not in hub.last.files and hub.last.message == "Upload processor"
    card = hub.readme()
    assert "The processor of a Nano-EmoX model" in card and "| interaction | `erg`" in card
    check_hub_metadata(card_metadata_of(card, tmp_path / "README.md"))

    hub.remote_card = render_model_card(NanoEmoXConfig.tiny(), repo_id="org/nano-emox-tiny")  # the model's card
    tiny_processor.push_to_hub("org/nano-emox-tiny")
    assert "README.md" not in hub.last.files and "processor_config.json" in hub.last.files


def test_push_to_a_branch_creates_it_like_transformers(tiny_processor, hub):
    tiny_processor.push_to_hub("org/nano-emox-tiny", revision="v1", commit_message="processor v1")
    assert hub.branches == [("org/nano-emox-tiny", "v1")]
    assert hub.last.kwargs["revision"] == "v1" and hub.last.message == "processor v1"


# ---- the card's metadata -------------------------------------------------------------------------------------------


def test_full_size_card_is_a_finetune_of_the_llm(tmp_path):
    card = render_model_card(NanoEmoXConfig(), repo_id="org/nano-emox")
    metadata = card_metadata_of(card, tmp_path / "README.md")
    check_hub_metadata(metadata)
    assert metadata["base_model"] == BASE_MODEL  # one base model: several would read as a merge on the Hub
    assert metadata["base_model_relation"] == "finetune"
    assert metadata["language"] == ["en", "zh"]  # M3ED / MER-series speech is Mandarin
    assert "datasets" not in metadata  # no recorded run, no dataset ids
    for tower in (
        "openai/clip-vit-large-patch14",
        "TencentGameMate/chinese-hubert-large",
        "kartiknarayan/facexformer",
    ):
        assert tower in card.split("---", 2)[2] and tower not in card.split("---", 2)[1]
    assert "No training run is recorded" in card and "multitask instruction tuning" in card
    assert f"[Nano-EmoX: Unifying Multimodal Emotional Intelligence from Perception to Empathy]({PAPER_URL})" in card
    assert ModelCard(card).data.base_model == BASE_MODEL


def summary():
    return {
        "recipe": "p2e",
        "variant": "full",
        "hardware": "8x H100 80GB",
        "phases": [
            {
                "name": "1.1",
                "title": "audio alignment",
                "trainable": ["model.audio_head."],
                "steps": 15000,
                "batch_size": 24,
                "learning_rate": 3e-4,
                "train_loss": 1.234,
                "data": [
                    {"name": "M3ED", "weight": 0.5, "samples": 24000, "hub_id": "org/m3ed"},
                    {"name": "CREMA-D", "weight": 0.5, "samples": 7442},
                ],
            },
            {
                "name": "3",
                "title": "multitask instruction tuning",
                "lora": True,
                "steps": 300000,
                "data": [{"name": "AvaMERG", "hub_id": "org/avamerg"}],
            },
        ],  # fmt: skip
        "evaluation": {
            "split": "test",
            "results": {"mer": {"accuracy": 0.61}},
            "chance": {"mer": {"accuracy": 1 / 6}},
        },
    }


def test_training_summary_fills_the_card(tiny_dir, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    write_training_summary(folder, summary())
    read = read_training_summary(folder)
    assert read["format"] == "nanoemox-training-summary" and read["version"] == 1
    card = render_model_card(NanoEmoXConfig(), read, repo_id="org/nano-emox")
    metadata = card_metadata_of(card, tmp_path / "README.md")
    assert metadata["datasets"] == ["org/m3ed", "org/avamerg"]  # only real Hub ids
    assert metadata["language"] == ["en", "zh"]
    assert "| 1.1 audio alignment | `model.audio_head.` | M3ED 0.5 (24,000 samples), CREMA-D 0.5 (7,442 samples) | 15,000 | 24 | 0.0003 | 1.234 |" in card  # fmt: skip
    assert "| mer | accuracy | 0.61 | 0.1667 |" in card
    assert "recipe `p2e`, variant `full`, on 8x H100 80GB" in card
    # A reduced-size model trained by the run is described as such, with English data only English.
    tiny = render_model_card(NanoEmoXConfig.tiny(), {**read, "phases": [{"name": "3", "data": [{"name": "AvaMERG"}]}]})
    assert "trained by the run recorded below" in tiny and "base_model" not in tiny.split("---", 2)[1]
    assert card_metadata_of(tiny, tmp_path / "tiny.md")["language"] == ["en"]


def test_trainer_state_and_eval_results_without_a_summary(tmp_path):
    state = {"global_step": 40, "epoch": 2.0, "train_batch_size": 4,
             "log_history": [{"loss": 3.1, "step": 20}, {"loss": 2.5, "step": 40},
                             {"train_loss": 2.8, "train_runtime": 61.23, "step": 40}]}  # fmt: skip
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "eval_results.json").write_text(json.dumps({"msa": {"weighted_f1": 0.5, "note": "x"},
                                                            "chance": {"msa": {"weighted_f1": 0.33}}}))  # fmt: skip
    read = read_training_summary(tmp_path)
    assert read["phases"] == [{"name": "training", "steps": 40, "epochs": 2.0, "batch_size": 4, "train_loss": 2.8,
                               "runtime_s": 61.2}]  # fmt: skip
    assert read["evaluation"]["results"] == {"msa": {"weighted_f1": 0.5}}
    assert read_training_summary(tmp_path / "nothing-here") is None


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"format": "other", "version": 1}, "format"),
        ({"phases": [{"steps": 3}]}, r"phases\[0\] needs a `name`"),
        ({"phases": [{"name": "1.1", "steps": -1}]}, r"phases\[0\].steps"),
        ({"evaluation": {"results": {"mer": {"accuracy": "high"}}}}, "evaluation.results.mer"),
    ],
)
def test_training_summary_schema_errors_name_the_field(bad, message):
    with pytest.raises(ValueError, match=message):
        validate_training_summary({"format": "nanoemox-training-summary", "version": 1, **bad})


# ---- an existing card on the Hub -----------------------------------------------------------------------------------


def ours():
    return render_model_card(NanoEmoXConfig.tiny(), repo_id="org/m")


def test_generic_template_and_our_own_card_are_replaced(hub):
    from transformers.utils.hub import create_and_tag_model_card

    generic = str(create_and_tag_model_card("org/m", tags=None))  # what transformers would upload: no card on the Hub
    assert GENERIC_SENTENCE in generic
    assert resolve_card(ours(), generic) == ours()
    older = render_model_card(NanoEmoXConfig.tiny(), repo_id="org/old")
    assert resolve_card(ours(), older) == ours()
    assert resolve_card(ours(), None) == ours()


def test_a_persons_text_around_our_section_is_kept(caplog):
    remote = ModelCard(ours())
    remote.data.datasets = ["org/my-data"]
    remote.text = (
        "Intro written on the Hub.\n\n" + remote.text.replace("Not trained", "OLD TEXT") + "\n## Notes\nMine.\n"
    )
    with caplog.at_level(logging.WARNING):
        card = resolve_card(ours(), str(remote))
    assert card.index("Intro written on the Hub.") < card.index(CARD_START) < card.index("## Notes\nMine.")
    assert "OLD TEXT" not in card and "Not trained" in card  # the generated section is regenerated
    assert ModelCard(card).data.datasets == ["org/my-data"] and ModelCard(card).data.pipeline_tag == "any-to-any"
    assert "text outside the generated Nano-EmoX section" in caplog.text and "datasets" in caplog.text


def test_a_card_of_its_own_is_kept_and_gets_our_metadata(caplog):
    remote = "---\nlicense: mit\ntags:\n- mine\n---\n\n# My Nano-EmoX\n\nEverything about my run.\n"
    with caplog.at_level(logging.WARNING):
        card = resolve_card(ours(), remote, where="org/m")
    parsed = ModelCard(card)
    assert parsed.text.strip() == "# My Nano-EmoX\n\nEverything about my run."
    assert parsed.data.license == "mit"  # their value kept
    assert parsed.data.tags[0] == "mine" and "arxiv:2603.02123" in parsed.data.tags
    assert parsed.data.library_name == "transformers" and parsed.data.pipeline_tag == "any-to-any"
    assert "org/m is a card of its own" in caplog.text and "license" in caplog.text
    assert "existing_card='replace'" in caplog.text
    with caplog.at_level(logging.WARNING):
        assert resolve_card(ours(), remote, "replace") == ours()
    assert "Overwrote the README.md" in caplog.text
    assert resolve_card(ours(), remote, "keep") is None
    with pytest.raises(ValueError, match="existing_card='always'"):
        resolve_card(ours(), remote, "always")


def test_push_folder_keeps_a_richer_remote_card_and_leaves_the_folder_alone(tiny_dir, hub):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_dir.iterdir()}
    hub.remote_card = "---\nlicense: apache-2.0\n---\n\n# Our lab's Nano-EmoX\n\nA long story.\n"
    push_folder_with_card(tiny_dir, "org/lab-model")
    assert "A long story." in hub.readme() and CARD_START not in hub.readme()
    assert ModelCard(hub.readme()).data.pipeline_tag == "any-to-any"
    assert set(hub.last.files) == {p.name for p in tiny_dir.iterdir()}
    assert {p.name: p.stat().st_mtime_ns for p in tiny_dir.iterdir()} == before
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        push_folder_with_card(tiny_dir / "missing", "org/lab-model")


def test_push_folder_uses_the_runs_summary(tiny_dir, hub, tmp_path):
    import shutil

    folder = tmp_path / "final"
    shutil.copytree(tiny_dir, folder)
    write_training_summary(folder, summary())
    push_folder_with_card(folder, "org/run", commit_message="P2E phase 3")
    assert hub.last.message == "P2E phase 3" and "training_summary.json" in hub.last.files
    assert "| mer | accuracy | 0.61 | 0.1667 |" in hub.readme()


# ---- the Space ------------------------------------------------------------------------------------------------------


def test_space_card_runs_on_zerogpu_and_links_the_model():
    from huggingface_hub import SpaceCard

    readme = Path(__file__).resolve().parents[1] / "spaces_demo" / "README.md"
    card = SpaceCard(readme.read_text(encoding="utf-8"))
    assert card.data.sdk == "gradio"
    assert card.data.python_version in ("3.10.13", "3.12.12")  # the versions ZeroGPU supports
    assert card.data.models == ["nano-emox/Nano-EmoX"]
    assert "NANOEMOX_MODEL" in card.text and "spaces.GPU(duration=" in card.text
