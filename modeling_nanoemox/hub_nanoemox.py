# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Publishing a Nano-EmoX folder to the Hub with the project's model card.

transformers' `push_to_hub` loads the Hub's card (or makes its generic template) and writes it over the `README.md`
that `save_pretrained` wrote. Here the card is ours (`model_card_nanoemox.render_model_card`, filled from the run's
`training_summary.json` when the folder has one), and a card already on the Hub is never silently overwritten when it
says more than ours (`resolve_card`). The upload is transformers' own path: `create_repo`, then one `create_commit` of
`CommitOperationAdd`s through the same `HfApi` instance transformers uses.

    from modeling_nanoemox.hub_nanoemox import push_folder_with_card, push_with_card

    push_with_card(model, "org/nano-emox", processor=processor)       # model + processor, one commit
    push_folder_with_card("outputs/p2e/final", "org/nano-emox")        # a folder written by save_pretrained
"""

import fnmatch
import json
import tempfile
from pathlib import Path

from huggingface_hub import CommitOperationAdd, ModelCard
from huggingface_hub.errors import EntryNotFoundError
from transformers.utils import logging

from .configuration_nanoemox import NanoEmoXConfig
from .model_card_nanoemox import (
    CARD_END,
    CARD_START,
    load_tasks,
    read_training_summary,
    render_metadata,
    render_model_card,
    validate_training_summary,
)

logger = logging.get_logger(__name__)

EXISTING_CARD_POLICIES = ("merge", "keep", "replace")
# The sentence of transformers' generic template (`create_and_tag_model_card`) and huggingface_hub's default card.
GENERIC_CARD_MARKERS = (
    "This is the model card of a 🤗 transformers model that has been pushed on the Hub.",
    "This modelcard aims to be a base template for new models.",
)
# Metadata keys whose values are lists the Hub reads as sets: merging takes the union.
LIST_KEYS = ("tags", "language", "datasets")


def hub_api():
    """The `HfApi` transformers uploads through (tagged with its library name), or an equivalent one."""
    try:
        from transformers.utils.hub import hf_api

        return hf_api()
    except ImportError:  # transformers < 5.20 has no shared instance
        import transformers
        from huggingface_hub import HfApi

        return HfApi(library_name="transformers", library_version=transformers.__version__)


# ---- which card is uploaded ----------------------------------------------------------------------------------------


def is_generated(card_text: str) -> bool:
    """Whether the card carries this module's generated section."""
    return CARD_START in card_text and CARD_END in card_text


def is_generic(card_text: str) -> bool:
    """Whether the card is transformers' (or huggingface_hub's) template, still unfilled: its sentence is there and
    most of its 39 "[More Information Needed]" placeholders too (a template a person filled in is theirs)."""
    return any(m in card_text for m in GENERIC_CARD_MARKERS) and card_text.count("[More Information Needed]") >= 20


def _split(card_text: str) -> tuple[dict, str]:
    card = ModelCard(card_text, ignore_metadata_errors=True)
    return card.data.to_dict(), card.text


def _outside_generated(text: str) -> str:
    start, end = text.find(CARD_START), text.find(CARD_END)
    if start < 0 or end < 0:
        return text
    return text[:start] + text[end + len(CARD_END) :]


def _replace_generated(text: str, body: str) -> str:
    start, end = text.find(CARD_START), text.find(CARD_END)
    return text[:start] + body.strip() + text[end + len(CARD_END) :]


def merge_metadata(theirs: dict, ours: dict, ours_wins: bool) -> tuple[dict, list[str], list[str]]:
    """
    Their keys plus ours: lists (`tags`, `language`, `datasets`) are unions; for a key both set to different values,
    `ours_wins` decides. Returns (merged, keys added or updated from ours, keys whose other value was kept).
    """
    merged, taken, kept = dict(theirs), [], []
    for key, value in ours.items():
        current = theirs.get(key)
        if current in (None, [], ""):
            merged[key] = value
            taken.append(key)
        elif key in LIST_KEYS:
            current = current if isinstance(current, list) else [current]
            value = value if isinstance(value, list) else [value]
            union = list(dict.fromkeys([*current, *value]))
            if union != current:
                merged[key] = union
                taken.append(key)
        elif current != value:
            if ours_wins:
                merged[key] = value
                taken.append(key)
            else:
                kept.append(f"{key}: {current!r} (ours: {value!r})")
    return merged, taken, kept


def resolve_card(ours: str, theirs: str | None, policy: str = "merge", where: str = "the Hub") -> str | None:
    """
    The README.md to upload given our generated card and the one already at `where` (`None`: there is none).
    Returns `None` to leave theirs untouched. With `policy`:

    - "merge" (default): no card, transformers' generic template, or a card that is only our generated section →
      ours. Our generated section plus text of a person's → that text kept, our section regenerated in place,
      metadata merged (ours wins on the keys we set, lists are unions). A card of their own (no generated section) →
      kept whole; our metadata only fills the keys it lacks and extends its lists. Whatever is kept is logged.
    - "keep": theirs untouched when there is one (`None`), else ours.
    - "replace": ours, with a warning saying what was overwritten.
    """
    if policy not in EXISTING_CARD_POLICIES:
        raise ValueError(f"existing_card={policy!r}; expected one of {EXISTING_CARD_POLICIES}.")
    if theirs is None or not theirs.strip():
        return ours
    their_metadata, their_text = _split(theirs)
    own_text = _outside_generated(their_text).strip() if is_generated(their_text) else their_text.strip()
    if is_generic(theirs) or (is_generated(their_text) and not own_text):
        return ours  # nothing of a person's in it: regenerated
    if policy == "keep":
        logger.warning(f"Kept the README.md on {where} as it is (existing_card='keep'); our card was not uploaded.")
        return None
    if policy == "replace":
        logger.warning(
            f"Overwrote the README.md on {where} ({len(own_text)} characters of its own text, metadata keys "
            f"{sorted(their_metadata)}) with the generated card (existing_card='replace')."
        )
        return ours
    our_metadata, our_text = _split(ours)
    if is_generated(their_text):
        metadata, taken, kept = merge_metadata(their_metadata, our_metadata, ours_wins=True)
        text = _replace_generated(their_text, our_text)
        extra = sorted(set(their_metadata) - set(our_metadata))
        logger.warning(
            f"The README.md on {where} has text outside the generated Nano-EmoX section ({len(own_text)} characters): "
            f"kept it and regenerated only that section; kept its own metadata keys {extra}."
        )
    else:
        metadata, taken, kept = merge_metadata(their_metadata, our_metadata, ours_wins=False)
        text = their_text
        logger.warning(
            f"The README.md on {where} is a card of its own ({len(own_text)} characters, no generated Nano-EmoX "
            f"section): kept it; added our metadata for {taken or 'nothing'}"
            + (f"; kept its values for {kept}" if kept else "")
            + ". Pass existing_card='replace' to upload the generated card instead."
        )
    return render_metadata(metadata) + "\n" + text.lstrip("\n")


# ---- uploading -----------------------------------------------------------------------------------------------------


def _folder_config(folder: Path) -> NanoEmoXConfig | None:
    path = folder / "config.json"
    if not path.is_file():
        return None
    if json.loads(path.read_text(encoding="utf-8")).get("model_type") != NanoEmoXConfig.model_type:
        return None
    return NanoEmoXConfig.from_json_file(str(path))


def _remote_card(repo_id: str, token) -> str | None:
    try:
        # The call transformers' `create_and_tag_model_card` makes.
        return str(ModelCard.load(repo_id, token=token))
    except EntryNotFoundError:
        return None


def push_folder_with_card(
    folder,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    tags: list[str] | None = None,
    training_summary: dict | None = None,
    existing_card: str = "merge",
    ignore_patterns: list[str] | None = None,
):
    """
    Uploads every file of `folder` (a model and/or processor folder written by `save_pretrained`) to `repo_id` in one
    commit, with our model card as README.md.

    The card is rendered from the folder's `config.json` (none: a processor-only card) and the run's record:
    `training_summary` if given, else the folder's `training_summary.json` / `trainer_state.json` /
    `eval_results.json`. A README.md in the folder that is not our generated card (one a person wrote) is used
    instead, with our metadata merged in. A card already on the Hub is handled by `existing_card` (see
    `resolve_card`). The folder itself is not modified. Returns the `CommitInfo` of `create_commit`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"push_folder_with_card: {folder} is not a folder.")
    if training_summary is not None:
        validate_training_summary(training_summary)
    api = hub_api()
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id

    config = _folder_config(folder)
    summary = training_summary if training_summary is not None else read_training_summary(folder)
    ours = render_model_card(config, summary, repo_id=repo_id, tags=tags, tasks=load_tasks(folder))
    local = folder / "README.md"
    if local.is_file():
        local_text = local.read_text(encoding="utf-8")
        if not is_generated(local_text) and not is_generic(local_text) and local_text.strip():
            ours = resolve_card(ours, local_text, "merge", where=f"{folder}")  # the folder's own card, our metadata
    theirs = _remote_card(repo_id, token)
    if config is None and theirs is not None and not is_generic(theirs) and existing_card != "replace":
        # A processor knows nothing of the model: the model's card (or a person's) stays as it is.
        logger.info(f"Kept the README.md on {repo_id}: a processor push does not rewrite an existing card.")
        card = None
    else:
        card = resolve_card(ours, theirs, existing_card, where=repo_id)

    ignore = ["README.md", ".git/*", ".cache/*", *(ignore_patterns or [])]
    operations = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if not any(fnmatch.fnmatch(relative, pattern) for pattern in ignore):
            operations.append(CommitOperationAdd(path_in_repo=relative, path_or_fileobj=str(path)))
    if card is not None:
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))

    if revision is not None and not revision.startswith("refs/pr"):
        api.create_branch(repo_id=repo_id, branch=revision, token=token, exist_ok=True)
    logger.info(f"Uploading to {repo_id}: {', '.join(op.path_in_repo for op in operations)}")
    return api.create_commit(
        repo_id=repo_id,
        operations=operations,
        commit_message=commit_message or "Upload Nano-EmoX",
        commit_description=commit_description,
        token=token,
        create_pr=create_pr,
        revision=revision,
    )


def push_with_card(
    obj,
    repo_id: str,
    *,
    processor=None,
    commit_message: str | None = None,
    max_shard_size: int | str | None = "50GB",
    tags: list[str] | None = None,
    **kwargs,
):
    """
    What `NanoEmoXForConditionalGeneration.push_to_hub` and `NanoEmoXProcessor.push_to_hub` do: `obj` (a model or
    a processor; `processor=` adds one to a model's commit) is saved to a temporary folder and uploaded with
    `push_folder_with_card`. Keyword arguments are `PushToHubMixin.push_to_hub`'s plus `existing_card` and
    `training_summary`.
    """
    is_model = hasattr(obj, "state_dict")
    tags = list(dict.fromkeys([*(getattr(obj, "model_tags", None) or []), *(tags or [])])) or None
    with tempfile.TemporaryDirectory() as folder:
        if is_model:
            obj.save_pretrained(folder, max_shard_size=max_shard_size)
        else:
            obj.save_pretrained(folder)
        if processor is not None:
            processor.save_pretrained(folder)
        if commit_message is None:
            commit_message = "Upload model" if is_model else "Upload processor"
            commit_message += " and processor" if is_model and processor is not None else ""
        return push_folder_with_card(folder, repo_id, commit_message=commit_message, tags=tags, **kwargs)


__all__ = ["push_folder_with_card", "push_with_card", "resolve_card"]
