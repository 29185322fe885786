# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Frozen-encoder feature cache: tower outputs computed once, stored as safetensors, reused by every epoch and phase.

The towers (CLIP, HuBERT, FaceXFormer) are frozen in all four P2E phases and run in eval mode, so their outputs for a
sample never change. Caching them skips media decoding and the three towers — most of a step's compute — in every
later epoch and phase. A cache is tied to the towers' weights and the processor's media settings by a fingerprint;
a different fingerprint is an error, never a silent reuse.

Layout: `ROOT/index.json` (fingerprint, which modalities each sample has) and one `ROOT/shards/<hash>.safetensors`
per sample with `video` `(T, 1 + S, D_v)`, `face` `(T, D_f)` and `audio` `(C, 1 + S, D_a)` tensors.

Built once across ranks (`build` is collective in a distributed run): the samples still missing are sorted by id and
sharded over the ranks (rank r takes every world-size-th), each rank decodes and encodes its shard in batches on its
own device (`device=`, the GPU of a training rank) and writes its samples' files plus its own partial index
`index.rank<r>.json` after every batch; the main process merges the partial indices into `index.json` and everyone
waits at a barrier, then reloads it. A killed build resumes: the partial indices of the killed run are merged first,
so only samples without a finished file are encoded again (whatever the new world size). The main process holds
`ROOT/build.lock` while building: a second run pointed at the same folder while one is building stops with an error
naming the holder (a lock left by a dead process on this machine is taken over with a warning). A rank that cannot
read a sample makes every rank raise, naming the sample (never a rank left waiting at the barrier).

Under FSDP / DeepSpeed ZeRO-3 the towers may not be whole on a rank when the recipe builds the cache (FSDP's
`cpu_ram_efficient_loading` puts ranks other than 0 on the meta device, ZeRO-3 partitions at load time); `build`
then refuses, and the cache is built by a pre-pass (`recipes/p2e.py --build_feature_cache_only`, launched with plain
data parallelism) that the sharded run reuses.
"""

import hashlib
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers.utils import logging

from . import distributed

logger = logging.get_logger(__name__)

MEDIA_SETTINGS = ("num_frames", "num_audio_clips", "audio_clip_seconds", "face_detector", "face_detection_max_side",
                  "face_margin", "max_frame_side")  # fmt: skip


def fingerprint(model, processor) -> str:
    """A hash of the towers' configs and weights (a strided sample of every tensor) and the processor's media
    settings: equal fingerprints mean equal features."""
    digest = hashlib.sha256()
    inner = model.model
    for name in ("vision_tower", "audio_tower", "face_encoder"):
        tower = getattr(inner, name)
        digest.update(tower.config.to_json_string(use_diff=False).encode())
        for key, tensor in tower.state_dict().items():
            flat = tensor.detach().flatten()
            stride = max(1, flat.numel() // 64)
            digest.update(key.encode())
            digest.update(flat[::stride].float().cpu().numpy().tobytes())
    settings = {name: getattr(processor, name) for name in MEDIA_SETTINGS}
    settings["image_processor"] = processor.image_processor.to_dict()
    settings["face_image_processor"] = processor.face_image_processor.to_dict()
    settings["feature_extractor"] = processor.feature_extractor.to_dict()
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class FeatureCache:
    """Tower features of manifest samples, by sample id."""

    LOCK_NAME = "build.lock"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.index_path = self.root / "index.json"
        self.fingerprint, self.entries = None, {}
        self.reload()

    def reload(self) -> None:
        index = _read_json(self.index_path) or {}
        self.fingerprint = index.get("fingerprint")
        self.entries: dict[str, list[str]] = index.get("samples", {})

    def _shard(self, sample_id: str) -> Path:
        return self.root / "shards" / f"{hashlib.sha1(sample_id.encode()).hexdigest()}.safetensors"

    def _save_index(self) -> None:
        _write_json_atomically(self.index_path, {"fingerprint": self.fingerprint, "samples": self.entries})

    def restricted_to(self, modalities) -> "FeatureCache":
        """A read-only view that shows only `modalities` (for phases that feed fewer media)."""
        view = FeatureCache.__new__(FeatureCache)
        view.root, view.index_path, view.fingerprint = self.root, self.index_path, self.fingerprint
        view.entries = {sid: [m for m in present if m in modalities] for sid, present in self.entries.items()}
        return view

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.entries

    def modalities(self, sample_id: str) -> list[str]:
        return self.entries[sample_id]

    def load(self, sample_id: str) -> dict[str, torch.Tensor]:
        """The sample's tower features by modality (only the modalities this cache or view shows)."""
        wanted = self.entries[sample_id]
        if not wanted:
            return {}
        return {name: tensor for name, tensor in load_file(self._shard(sample_id)).items() if name in wanted}

    def missing(self, samples) -> list:
        """The samples (deduplicated by id, sorted by id) that have no entry yet."""
        unique = {sample.id: sample for sample in samples if sample.id not in self.entries}
        return [unique[sample_id] for sample_id in sorted(unique)]

    # ---- building ------------------------------------------------------------------------------------------------

    def _partial_indices(self) -> list[Path]:
        return sorted(self.root.glob("index.rank*.json"))

    def _merge_partial_indices(self) -> int:
        """Main process: folds the ranks' partial indices (this build's or a killed one's) into `index.json`."""
        added = 0
        for path in self._partial_indices():
            partial = _read_json(path)
            if partial and partial.get("fingerprint") == self.fingerprint:
                for sample_id, present in partial.get("samples", {}).items():
                    if sample_id not in self.entries and (not present or self._shard(sample_id).is_file()):
                        self.entries[sample_id] = present
                        added += 1
            elif partial:
                logger.warning(f"{path}: left by a build with other towers or settings; ignored.")
        self._save_index()
        for path in self._partial_indices():
            path.unlink()
        return added

    @contextmanager
    def _lock(self):
        """Main process: holds ROOT/build.lock for the build (see the module docstring)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / self.LOCK_NAME
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = _read_json(path) or {}
                if holder.get("host") == me["host"] and not _pid_alive(holder.get("pid")):
                    logger.warning(f"{path}: left by process {holder.get('pid')}, which is gone; taking it over.")
                    path.unlink(missing_ok=True)
                    continue
                raise RuntimeError(
                    f"Another run is building the feature cache at {self.root} (process {holder.get('pid')} on "
                    f"{holder.get('host')}, since {holder.get('started')}): wait for it, point --feature_cache at "
                    f"another folder, or delete {path} if that run is gone."
                ) from None
            with os.fdopen(handle, "w") as file:
                json.dump(me, file)
            break
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    def build(self, model, processor, samples, batch_size: int = 8, device=None, progress: bool = True) -> int:
        """
        Computes and stores the tower features of the samples not cached yet; returns how many were added (over all
        ranks). Collective in a distributed run: every rank calls it with the same `samples`.

        Args:
            device: where the towers encode (default: where they are); a training rank passes its own device.

        Raises `ValueError` when the cache was built with other towers or media settings, `RuntimeError` when
        another run holds the folder's lock or the towers are not whole on this rank (FSDP / ZeRO-3: build it in a
        pre-pass), and in a distributed run `DistributedFailure` on every rank when any rank failed.
        """
        inner = model.model
        towers = [inner.vision_tower, inner.audio_tower, inner.face_encoder]
        whole = all(distributed.all_gather_objects(all(distributed.model_parameters_local(t) for t in towers)))

        def check() -> str | None:
            """The fingerprint of these towers, refused when the cache was built with others."""
            self.reload()
            current = fingerprint(model, processor) if whole else None
            if current is not None and self.fingerprint not in (None, current):
                raise ValueError(
                    f"The feature cache at {self.root} was built with other towers or media settings; delete it or "
                    "point the recipe at another folder."
                )
            return current

        def prepare() -> None:
            """Under the lock: records the fingerprint and folds in what a killed build left."""
            self.fingerprint = check() or self.fingerprint
            resumed = self._merge_partial_indices()
            if resumed:
                logger.warning(f"Feature cache: {resumed} samples kept from an interrupted build.")

        if not self.missing(samples):  # nothing to build: no lock, no writes (readers never block each other)
            if whole:
                distributed.on_main_process(check, "Checking the feature cache")
            else:
                logger.warning(f"{self.root}: the towers are sharded here, so the fingerprint is not checked.")
            self.reload()
            return 0
        if not whole:
            raise RuntimeError(
                f"The feature cache at {self.root} lacks {len(self.missing(samples))} samples and the towers are "
                "sharded on this rank (FSDP cpu_ram_efficient_loading / DeepSpeed ZeRO-3), so they cannot encode. "
                "Build the cache first with `recipes/p2e.py --build_feature_cache_only` under plain data parallelism "
                "(e.g. recipes/accelerate/multi_gpu.yaml), then launch the sharded run."
            )
        lock = self._lock()
        distributed.on_main_process(lock.__enter__, "Taking the feature cache's lock")
        try:
            distributed.on_main_process(prepare, "Preparing the feature cache")
            self.reload()
            todo = self.missing(samples)
            shard = todo[distributed.rank() :: distributed.world_size()]
            distributed.on_every_rank(
                lambda: self._encode(model, processor, shard, batch_size, device, progress),
                "Building the feature cache",
            )
            distributed.barrier()
            distributed.on_main_process(self._merge_partial_indices, "Merging the feature cache's index")
            self.reload()
        finally:
            distributed.on_main_process(lambda: lock.__exit__(None, None, None), "Releasing the feature cache's lock")
        return len(todo)

    def _encode(self, model, processor, samples, batch_size, device, progress) -> None:
        """This rank's share: encoded in batches, each batch's files and partial index written before the next."""
        inner = model.model
        towers = [inner.vision_tower, inner.audio_tower, inner.face_encoder]
        home = next(inner.vision_tower.parameters()).device
        device = torch.device(device) if device is not None else home
        partial_path = self.root / f"index.rank{distributed.rank()}.json"
        partial = {"fingerprint": self.fingerprint, "samples": {}}
        was_training = [tower.training for tower in towers]
        for tower in towers:
            tower.to(device).eval()
        try:
            batches = range(0, len(samples), batch_size)
            bar = tqdm(
                batches, desc="feature cache", unit="batch", disable=not (progress and distributed.is_main_process())
            )
            for start in bar:
                batch = samples[start : start + batch_size]
                try:
                    encoded = self._encode_batch(inner, processor, batch, device)
                except Exception as error:  # noqa: BLE001 - name the sample that fails
                    culprit = _first_failing(lambda one: self._encode_batch(inner, processor, [one], device), batch)
                    raise type(error)(f"feature cache: sample {culprit or [s.id for s in batch]}: {error}") from error
                for row, sample in enumerate(batch):
                    tensors = {m: per_row[row].contiguous() for m, per_row in encoded.items() if row in per_row}
                    if tensors:
                        shard = self._shard(sample.id)
                        shard.parent.mkdir(parents=True, exist_ok=True)
                        temporary = shard.with_name(f"{shard.stem}.rank{distributed.rank()}.tmp")
                        save_file(tensors, temporary)
                        temporary.replace(shard)  # a killed write never leaves a short file under the final name
                    partial["samples"][sample.id] = sorted(tensors)
                _write_json_atomically(partial_path, partial)
        finally:
            for tower, training in zip(towers, was_training):
                tower.to(home).train(training)

    @staticmethod
    def _encode_batch(inner, processor, batch, device) -> dict[str, dict[int, torch.Tensor]]:
        """{modality: {row: tower features}} of one batch, through the standard chat path, every modality on (a
        phase reads a restricted view of the cache)."""
        conversations = [
            processor.build_task_messages("msa", video=s.video, audio=s.audio, faces=s.faces) for s in batch
        ]
        inputs = processor.apply_chat_template(
            conversations, tokenize=True, return_dict=True, return_tensors="pt", load_audio_from_video=True,
            max_length=10**6, padding=True,
        )  # fmt: skip
        # Media tensors hold only the items present, in batch order; the placeholders say which rows have them.
        ids = inputs["input_ids"]
        encoded = {}
        with torch.inference_mode():
            for modality, key, token_id, encode in (
                ("video", "pixel_values_videos", processor.tokenizer.video_token_id, inner.get_video_tower_features),
                ("face", "face_pixel_values", processor.tokenizer.face_token_id, inner.get_face_tower_features),
                ("audio", "audio_values", processor.tokenizer.audio_token_id, inner.get_audio_tower_features),
            ):
                if key in inputs:
                    rows = (ids == token_id).any(dim=1).nonzero().flatten().tolist()
                    features = encode(inputs[key].to(device)).float().cpu()
                    encoded[modality] = dict(zip(rows, features))
        return encoded


def _first_failing(function, batch) -> str | None:
    for sample in batch:
        try:
            function(sample)
        except Exception:  # noqa: BLE001
            return sample.id
    return None


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _write_json_atomically(path: Path, value) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value))
    temporary.replace(path)  # atomic: a killed build never leaves a half-written index
