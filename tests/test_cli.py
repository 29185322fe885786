"""`nanoemox` command line (nanoemox_cli.py): info, create-tiny, lazy start-up, one-line errors."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from nanoemox_cli import build_parser, main

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "modeling_nanoemox"


def test_info_command(capsys):
    assert main(["info", "--size", "full", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert abs(info["total"] - 2.30e9) / 2.30e9 < 0.01
    assert abs(info["total_without_swin_backbone"] - 2.21e9) / 2.21e9 < 0.01
    assert info["phases"]["1.1"]["trainable"] == info["components"]["audio_head.qformer"] + 32 * 768 + 8 * 1024 + (
        768 * 1536 + 1536
    )
    assert main(["info", "--size", "tiny"]) == 0
    table = capsys.readouterr().out
    assert "tokens per clip: 8 video + 8 audio + 2 face + 1 fusion = 19" in table


def test_create_tiny_writes_a_folder_with_its_pipeline(tmp_path, capsys):
    assert main(["create-tiny", str(tmp_path / "tiny"), "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "tiny")
    assert {
        "config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "README.md",
        "pipeline_nanoemox.py", "chat_template.jinja",
    } <= {p.name for p in (tmp_path / "tiny").iterdir()}  # fmt: skip


def test_help_loads_no_command_module_torch_or_transformers():
    # `import modeling_nanoemox` itself loads torch and transformers (it registers the Auto classes); the command
    # line must add nothing on top: with an empty stand-in for the package, `--help` imports none of them.
    code = textwrap.dedent(
        f"""
        import sys, types
        package = types.ModuleType("modeling_nanoemox")
        package.__path__ = [{str(PACKAGE_DIR)!r}]
        sys.modules["modeling_nanoemox"] = package
        from nanoemox_cli import main
        try:
            main(["--help"])
        except SystemExit as exit:
            assert exit.code == 0
        heavy = [name for name in sys.modules if name.split(".")[0] in ("torch", "transformers", "numpy")]
        commands = [name for name in sys.modules if name.startswith(("modeling_nanoemox.predict", "modeling_nanoemox.eval"))]
        print(heavy[:5], commands)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "predict    Answer one task for one clip." in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[] []"


def test_subcommand_help_registers_only_that_command():
    parser = build_parser("predict")
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert {"info", "create-tiny", "predict", "eval"} == set(commands)
    assert any(a.dest == "candidates" for a in commands["predict"]._actions)
    assert not any(a.dest == "eval_command" for a in commands["eval"]._actions)  # a one-line stub


def test_cli_errors_are_one_line_without_traceback(tmp_path, tiny_dir):
    result = subprocess.run(
        [sys.executable, "-m", "nanoemox_cli", "predict", "--model", str(tiny_dir), "--video",
         str(tmp_path / "missing.mp4"), "--task", "mer"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip() and "nanoemox" in line]
    assert lines == [f"nanoemox predict: error: --video {tmp_path / 'missing.mp4'}: no such file."]
    assert "Traceback" not in result.stderr
