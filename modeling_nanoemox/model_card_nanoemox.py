# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The model card (`README.md`) written next to a saved Nano-EmoX model."""

from .configuration_nanoemox import CHINESE_HUBERT_LARGE, CLIP_VIT_L_14, QWEN2_5_1_5B_INSTRUCT, NanoEmoXConfig

try:
    # The processor owns the task prompts; it is importable wherever the project is installed. A folder loaded as
    # remote code elsewhere still renders a card, without the prompt column.
    from nanoemox_processing.prompts_nanoemox import TASKS
except ImportError:
    TASKS = None

COMPONENTS = (
    ("Language model", "Qwen/Qwen2.5-1.5B-Instruct", "Apache-2.0"),
    ("Vision tower", "openai/clip-vit-large-patch14", "MIT"),
    ("Audio tower", "TencentGameMate/chinese-hubert-large", "MIT"),
    ("Face encoder", "kartiknarayan/facexformer", "MIT"),
)


def is_full_size(config: NanoEmoXConfig) -> bool:
    """Whether the architecture is the released one (so the card can name the component checkpoints)."""
    return (
        config.text_config.hidden_size == QWEN2_5_1_5B_INSTRUCT["hidden_size"]
        and config.vision_config.hidden_size == CLIP_VIT_L_14["hidden_size"]
        and config.audio_config.hidden_size == CHINESE_HUBERT_LARGE["hidden_size"]
    )


def _task_table() -> str:
    if TASKS is None:
        return "The six tasks and their prompts are defined by the processor saved with this model.\n"
    rows = ["| level | task | input | answer | prompt |", "|---|---|---|---|---|"]
    for task in TASKS.values():
        instruction = task.instruction.replace("|", "\\|")
        rows.append(
            f"| {task.level} | `{task.name}` — {task.title} | {task.inputs} | {task.answer_format} | {instruction} |"
        )
    return "\n".join(rows) + "\n"


def render_model_card(config: NanoEmoXConfig) -> str:
    full = is_full_size(config)
    base_models = "".join(f"  - {repo}\n" for _, repo, _ in COMPONENTS) if full else ""
    header = (
        "---\n"
        "library_name: transformers\n"
        "pipeline_tag: video-text-to-text\n"
        "license: apache-2.0\n"
        + (f"base_model:\n{base_models}" if full else "")
        + "tags:\n  - nano-emox\n  - emotion-recognition\n  - affective-computing\n  - multimodal\n"
        "  - video\n  - audio\n---\n\n"
    )
    if full:
        summary = (
            "Nano-EmoX (Huang et al., CVPR 2026) is a 2.2 B-parameter multimodal language model covering six affective "
            "tasks on three levels: perception, understanding and interaction.\n"
        )
    else:
        summary = (
            "A **randomly initialised, reduced-size** Nano-EmoX with the full architecture, meant for tests, demos "
            "and CPU runs. Its answers are not meaningful.\n"
        )
    components = "\n".join(f"| {part} | `{repo}` | {license_} |" for part, repo, license_ in COMPONENTS)
    tokens = ", ".join(f"{getattr(config, f'num_{m}_tokens')} {m}" for m in ("video", "audio", "face", "fusion"))
    return (
        header
        + "# Nano-EmoX\n\n"
        + summary
        + f"\nEach clip becomes {tokens} tokens in the language model's prompt.\n\n"
        "## How to load\n\n"
        "```python\n"
        "from transformers import AutoModel, AutoProcessor\n\n"
        'model = AutoModel.from_pretrained("PATH_OR_REPO", trust_remote_code=True)\n'
        'processor = AutoProcessor.from_pretrained("PATH_OR_REPO", trust_remote_code=True)\n\n'
        'inputs = processor(videos="clip.mp4", text="I can\'t believe it!", task="mer")\n'
        "output = model.generate(**inputs, max_new_tokens=64, do_sample=False)\n"
        'print(processor.batch_decode(output[:, inputs["input_ids"].shape[1]:])[0])\n'
        "```\n\n"
        "The processor decodes the video (8 frames), finds and crops the main face, takes the audio track (8 × 2 s at "
        "16 kHz) and writes the prompt with the language model's chat template.\n\n"
        "## Tasks\n\n" + _task_table() + "\n"
        "## Components and licences\n\n"
        "| part | checkpoint | licence |\n|---|---|---|\n" + components + "\n\n"
        "The Nano-EmoX code is Apache-2.0; the authors' research code is MIT. Check each component's own card for its "
        "terms before redistributing weights.\n\n"
        "## Citation\n\n"
        "Huang et al., *Nano-EmoX: Unifying Multimodal Emotional Intelligence from Perception to Empathy*, CVPR 2026, "
        "arXiv:2603.02123.\n"
    )
