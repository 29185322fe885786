"""Resume after a kill during a save (issue 17, cause 6): a truncated `final/` is not "done", a truncated newest
checkpoint (or one without `trainer_state.json`) falls back to the newest intact one, a `start/` folder without
weights is rebuilt."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_training import load_recipe, small_data, write_recipe  # noqa: F401 - the fixture is reused

from modeling_nanoemox.training.curriculum import (
    checkpoint_intact,
    latest_intact_checkpoint,
    safetensors_intact,
    save_folder_atomically,
    saved_model_complete,
)


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def fake_checkpoint(folder: Path, tiny_dir: Path, step: int) -> Path:
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    shutil.copy(tiny_dir / "model.safetensors", checkpoint / "model.safetensors")
    torch.save({"state": {}, "param_groups": []}, checkpoint / "optimizer.pt")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return checkpoint


def test_safetensors_and_folder_checks(tiny_dir, tmp_path):
    folder = tmp_path / "final"
    shutil.copytree(tiny_dir, folder)
    assert safetensors_intact(folder / "model.safetensors") and saved_model_complete(folder)
    for keep in (0.999, 0.5, 0.0):
        broken = tmp_path / f"broken{keep}"
        shutil.copytree(tiny_dir, broken)
        truncate(broken / "model.safetensors", keep)
        assert not safetensors_intact(broken / "model.safetensors") and not saved_model_complete(broken)
    no_processor = tmp_path / "no_processor"
    shutil.copytree(tiny_dir, no_processor)
    (no_processor / "processor_config.json").unlink()
    assert not saved_model_complete(no_processor) and saved_model_complete(no_processor, need_processor=False)
    only_config = tmp_path / "start"
    only_config.mkdir()
    shutil.copy(tiny_dir / "config.json", only_config / "config.json")
    assert not saved_model_complete(only_config, need_processor=False)


def test_the_newest_intact_checkpoint_is_chosen_and_broken_ones_set_aside(tiny_dir, tmp_path):
    phase = tmp_path / "phase_1.1"
    fake_checkpoint(phase, tiny_dir, 2)
    fake_checkpoint(phase, tiny_dir, 10)  # numeric order, not name order: 10 > 8 > 6 > 2
    assert latest_intact_checkpoint(phase).name == "checkpoint-10"
    truncate(fake_checkpoint(phase, tiny_dir, 12) / "model.safetensors")
    (fake_checkpoint(phase, tiny_dir, 14) / "trainer_state.json").unlink()
    truncate(fake_checkpoint(phase, tiny_dir, 16) / "optimizer.pt", 0.8)
    (fake_checkpoint(phase, tiny_dir, 18) / "trainer_state.json").write_text('{"global_st')
    assert latest_intact_checkpoint(phase).name == "checkpoint-10"
    assert sorted(p.name for p in phase.iterdir()) == [
        "broken-checkpoint-12", "broken-checkpoint-14", "broken-checkpoint-16", "broken-checkpoint-18",
        "checkpoint-10", "checkpoint-2",
    ]  # fmt: skip
    assert not checkpoint_intact(phase / "broken-checkpoint-16")
    assert latest_intact_checkpoint(tmp_path / "nothing") is None


def test_an_interrupted_atomic_save_leaves_the_old_folder(tmp_path):
    target = tmp_path / "final"
    save_folder_atomically(target, lambda folder: (folder.mkdir(), (folder / "a").write_text("old")))

    def killed(folder):
        folder.mkdir()
        (folder / "a").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_folder_atomically(target, killed)
    assert (target / "a").read_text() == "old"
    save_folder_atomically(target, lambda folder: (folder.mkdir(), (folder / "a").write_text("new")))
    assert (target / "a").read_text() == "new" and not (tmp_path / "final.partial").exists()


def test_relaunch_after_a_kill_during_saves_resumes_from_the_newest_intact_checkpoint(small_data, tiny_dir, tmp_path):  # noqa: F811
    recipe = load_recipe()
    out = tmp_path / "out"
    base = ["--recipe", str(write_recipe(tmp_path / "recipe", steps=4, save_steps=2)), "--phase", "1.1",
            "--data_root", str(small_data), "--model_name_or_path", str(tiny_dir), "--output_dir", str(out)]  # fmt: skip
    assert recipe.main(base) == 0
    phase = out / "phase_1.1"
    # The kill came while checkpoint-4 and final/ were being written (as the old, non-atomic save could leave them).
    truncate(phase / "final" / "model.safetensors")
    truncate(phase / "checkpoint-4" / "model.safetensors")
    assert recipe.main(base) == 0
    assert saved_model_complete(phase / "final")
    assert (phase / "broken-checkpoint-4").is_dir()
    state = json.loads((phase / "checkpoint-4" / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3, 4]


def test_a_start_folder_without_weights_is_rebuilt(tiny_dir, tmp_path, monkeypatch):
    """The embedded default's start model: a folder killed before its weights were written is built again; a
    complete one is kept."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "recipes"))  # as a recipe script imports it
    import embedded.towers
    from embedded.pipeline import StageClock, prepare

    class Rebuilt(Exception):
        pass

    def build_start_model(seed=0):
        raise Rebuilt

    monkeypatch.setattr(embedded.towers, "build_start_model", build_start_model)
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "test.jsonl").write_text(json.dumps({"id": "a", "task": "msa", "text": "hi"}) + "\n")
    (out / "start").mkdir()
    shutil.copy(tiny_dir / "config.json", out / "start" / "config.json")  # killed before the weights
    args = type("Args", (), {"feature_cache": "none"})()
    with pytest.raises(Rebuilt):
        prepare(out, args, StageClock())
    shutil.rmtree(out / "start")
    shutil.copytree(tiny_dir, out / "start")
    assert prepare(out, args, StageClock()) == (str(out / "data"), str(out / "start"))  # complete: not rebuilt
