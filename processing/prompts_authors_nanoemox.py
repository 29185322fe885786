# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The authors' prompt style (`prompt_style="authors"`): the text their LAVIS checkpoints were trained on.

Everything here was read from the authors' code (github.com/waHAHJIAHAO/Nano-EmoX, commit b08f985); file:line
references below are to that commit. The strings are the authors' data (prompt text), reproduced character for
character, typos, missing spaces and curly apostrophes included: a converted checkpoint should see what it saw in
training. The code is ours. Standard library only (this file ships with the processor as remote code).

## How the authors assemble a sample (datasets/datasets/base_dataset.py)

- `get_prompt_for_multimodal(face_or_frame, subtitle, user_message)` (base_dataset.py:685-779) returns one of a fixed
  table of layouts, chosen by the modalities (`face_or_frame`). Phase 2 and phase 3 use
  `multiface_audio_face_frame_text` for every dataset (configs/phase2.yaml:68,73; configs/phase3.yaml:70-94):

      ###Human: The audio and video merged info is: <Multi><MultiHere></Multi>. The audio content is as follows:
      <Audio><AudioHere></Audio>. Meanwhile, We uniformly extract facial informations from video:
      <Video><FaceHere></Video>. Meanwhile, we uniformly sample raw frames from the video: <Video><FrameHere></Video>.
      The subtitle of this video is: <Subtitle>{subtitle}</Subtitle>. Now, please answer my question based on all the
      provided information. {question} ###Assistant:␠

  (one line, ending in one space): fusion, audio, face, frames, then the subtitle. Phase 1.1 uses `audio_text`
  (M3ED, CREMA-D: configs/phase1_1.yaml:73-81) and phase 1.2 `face_frame` (CAER/FERV39k: configs/phase1_2.yaml:73-76).
- AvaMERG overrides the table (datasets/datasets/avamerg_dataset.py:134-206): the subtitle slot holds the dialogue
  history, wrapped `<Dialogue History>…</Dialogue History>`, and the question is introduced by
  "Now here is the dialogue context:\\n. ".
- The placeholders `<MultiHere>` `<AudioHere>` `<FaceHere>` `<FrameHere>` (config.py:129-133) are expanded to 1, 32,
  4, 32 copies (base_dataset.py:782-794, configs/phase3.yaml:44-47) — here each stays ONE placeholder, the string
  the caller passes in `placeholders`; the processor expands it.
- The target is `answer + "###"` (base_dataset.py:830); the prompt and the target are tokenised SEPARATELY with
  `add_special_tokens=False` and concatenated (base_dataset.py:828-834), and the collater adds the tokenizer's bos,
  which the authors set to `<|im_start|>` for Qwen2.5 (models/tokenizer.py:34), in front and the eos after the target
  (base_dataset.py:888-897); the label covers target + eos. A sample longer than `max_length=1024` tokens is dropped
  and another one drawn at random (base_dataset.py:837-843).
- Questions: some tasks have a list of paraphrases, drawn with `random.choice` for every sample (base_dataset.py:267,
  285, 483); the authors' inference script draws again at evaluation (inference_hybird.py:138,148). For evaluation we
  fix ONE question per task, always the first of the list (index 0): the choice is arbitrary among equally trained
  paraphrases, the first is the one listed first in the authors' code, and a fixed prompt makes scores repeatable.
- A sample's task is drawn uniformly among the dataset's label types when `label_type: hybird` (base_dataset.py:126-
  132): MER-Caption+ → ERI or OV-MER (mercaptionplus_dataset.py:81), AvaMERG → ERG or its emotion sub-task
  (avamerg_dataset.py:27).

## API

- [`AUTHORS_TASK_SPECS`]: per task, the questions (training list), the evaluation question index, the answer template,
  whether it takes candidate labels, and where it comes from.
- [`render_authors_prompt`]: the prompt string, with one unexpanded placeholder per modality block.
- [`format_authors_target`]: the training target, ending with `###`.
- [`format_chain_of_empathy_authors`]: the ERG answer "<think>Firstly, … Fourthly, …</think>\\n {reply}".
- [`authors_candidates`]: the candidate-label string exactly as the authors spelt it for a known label set.
- [`authors_erg_inference_message`]: the ERG question as the authors' inference script (not training) wrote it.
- [`authors_task_name`]: our task name (+ dataset, candidates, protocol) → the authors' task key.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "AUTHORS_BOS_TOKEN",
    "AUTHORS_CANDIDATES",
    "AUTHORS_HISTORY_ROLES",
    "AUTHORS_LAYOUTS",
    "AUTHORS_PAPER_PROTOCOL_QUESTION_TASK",
    "AUTHORS_PLACEHOLDERS",
    "AUTHORS_TARGET_END",
    "AUTHORS_TASK_SPECS",
    "AuthorsTaskSpec",
    "authors_candidates",
    "authors_erg_inference_message",
    "authors_layout_name",
    "authors_task_name",
    "format_authors_target",
    "format_chain_of_empathy_authors",
    "render_authors_prompt",
]

# The bos the authors put in front of every training sequence (models/tokenizer.py:34, base_dataset.py:895). Their
# inference path does NOT add it (conversation/conversation_video.py:131-138, 211-212).
AUTHORS_BOS_TOKEN = "<|im_start|>"
# The end of every target (base_dataset.py:830); generation stops on "###" (conversation_video.py:116-123).
AUTHORS_TARGET_END = "###"
# The authors' own placeholder strings (config.py:129-133); the default of `placeholders`.
AUTHORS_PLACEHOLDERS = {"fusion": "<MultiHere>", "audio": "<AudioHere>", "face": "<FaceHere>", "video": "<FrameHere>"}
MODALITIES = ("fusion", "audio", "face", "video")
# Chat roles → AvaMERG's dialogue roles, for history given as chat messages (our adapters map speaker → user,
# listener → assistant; modeling_nanoemox/data/adapters.py `_USER_ROLES` / `_ASSISTANT_ROLES`).
AUTHORS_HISTORY_ROLES = {"user": "speaker", "assistant": "listener"}

# The candidate-label strings exactly as the authors wrote them (spaces and missing spaces included).
AUTHORS_CANDIDATES = {
    # datasets/datasets/mintrec_dataset.py:25
    "mintrec": "complain, praise, apologise, thank, criticize, agree, taunt, flaunt, joke, oppose, comfort, care, "
    "inform, advise, arrange, introduce, leave, prevent, greet, ask for help",
    # datasets/datasets/mintrec2_dataset.py:25 (no space after every fifth comma)
    "mintrec2": "acknowledge, advise, agree, apologise, arrange,ask for help, asking for opinions, care, comfort, "
    "complain,confirm, criticize, doubt, emphasize, explain,flaunt, greet, inform, introduce, invite,joke, leave, "
    "oppose, plan, praise,prevent, refuse, taunt, thank, warn",
    # datasets/datasets/crema_dataset.py:25
    "crema_d": "anger, disgust, fear, happy, neutral, sad",
    # datasets/datasets/caer_ferv39k_dataset.py:29
    "caer_ferv39k": "anger, disgust, fear, happy, neutral, sad, surprise",
}

# Under the paper's protocol (MER-UniBench) MSA and MER are not asked their own question: the authors' inference
# script asks every benchmark the OV-MER question (inference_hybird.py:136-138, `--zeroshot`) and an LLM extracts the
# labels from the answer (evaluation-scoreonly.py:151-160 for MER, 182-194 for MSA via openset → sentiment).
AUTHORS_PAPER_PROTOCOL_QUESTION_TASK = {"msa": "ovmer", "mer": "ovmer"}

# ---- layouts --------------------------------------------------------------------------------------------------------
# Fields: {fusion} {audio} {face} {video} (one placeholder each), {subtitle}, {question}.
_ANSWER = "Now, please answer my question based on all the provided information. {question} ###Assistant: "
_SUBTITLE = "The subtitle of this video is: <Subtitle>{subtitle}</Subtitle>. "
_FUSION = "The audio and video merged info is: <Multi>{fusion}</Multi>. "
_AUDIO = "The audio content is as follows: <Audio>{audio}</Audio>. "

# base_dataset.py:685-779, key = the authors' `face_or_frame`. ("image" is left out: no image input here.)
_BASE_LAYOUTS = {
    "faceframe": "###Human: " + _AUDIO + "Meanwhile, we uniformly sample raw frames from the video: "
    "<Video>{video}</Video>. Additionally, We uniformly extract faces information from video: <Video>{face}</Video>. "
    + _SUBTITLE
    + _ANSWER,  # :688-694
    "face": "###Human: " + _AUDIO + "Meanwhile, We uniformly extract facial informations from video: "
    "<Video>{face}</Video>. " + _SUBTITLE + _ANSWER,  # :695-700
    "frame": "###Human: "
    + _AUDIO
    + "Meanwhile, we uniformly sample raw frames from the video: <Video>{video}</Video>. "
    + _SUBTITLE
    + _ANSWER,  # :701-706
    "audioonly": "###Human: " + _AUDIO + _ANSWER,  # :707-709
    "textonly": "###Human: " + _SUBTITLE + _ANSWER,  # :710-713
    "faceonly": "###Human: We uniformly extract facial informations from video: <Video>{face}</Video>. "
    + _ANSWER,  # :714-716
    "frameonly": "###Human: We uniformly sample raw frames from the video: <Video>{video}</Video>. "
    + _ANSWER,  # :717-719
    "face_frame": "###Human: We uniformly sample raw frames from the video: <Video>{video}</Video>. Meanwhile, We "
    "uniformly extract facial informations from video: <Video>{face}</Video>. " + _ANSWER,  # :723-726
    # The four "*_text" ablation layouts have no "###Human: " (:727-750).
    "face_frame_text": "We uniformly sample raw frames from the video: <Video>{video}</Video>. We uniformly extract "
    "facial informations from video: <Video>{face}</Video>. " + _SUBTITLE + _ANSWER,  # :727-733
    "audio_text": _AUDIO + _SUBTITLE + _ANSWER,  # :735-739
    "face_text": "We uniformly extract facial informations from video: <Video>{face}</Video>. "
    + _SUBTITLE
    + _ANSWER,  # :740-744
    "frame_text": "we uniformly sample raw frames from the video: <Video>{video}</Video>. "
    + _SUBTITLE
    + _ANSWER,  # :745-749
    "multiframe_audio_frame_text": "###Human: " + _FUSION + _AUDIO + "Meanwhile, we uniformly sample raw frames from "
    "the video: <Video>{video}</Video>. " + _SUBTITLE + _ANSWER,  # :764-770
    "multiface_audio_face_frame_text": "###Human: " + _FUSION + _AUDIO + "Meanwhile, We uniformly extract facial "
    "informations from video: <Video>{face}</Video>. Meanwhile, we uniformly sample raw frames from the video: "
    "<Video>{video}</Video>. " + _SUBTITLE + _ANSWER,  # :771-778
}

_DIALOGUE = "Now here is the dialogue context:\n. {question} ###Assistant: "
_HISTORY = "The dialogue history is: <Dialogue History>{subtitle}</Dialogue History>. "
_HISTORY_TIGHT = "The dialogue history is:<Dialogue History>{subtitle}</Dialogue History>. "  # no space after "is:"

# avamerg_dataset.py:134-206 (AvaMERG has no audioonly/textonly/faceonly/frameonly/face_frame layout).
_AVAMERG_LAYOUTS = {
    # :137-143 — the only layout without the space after "###Assistant:", and "facial informations" (not "faces").
    "faceframe": "###Human: " + _AUDIO + "Meanwhile, we uniformly sample raw frames from the video: "
    "<Video>{video}</Video>. Additionally, We uniformly extract facial informations from video: <Video>{face}</Video>. "
    + _SUBTITLE
    + _DIALOGUE[:-1],
    "face": "###Human: " + _AUDIO + "Meanwhile, We uniformly extract facial informations from video: "
    "<Video>{face}</Video>. " + _SUBTITLE + _DIALOGUE,  # :144-149
    "frame": "###Human: "
    + _AUDIO
    + "Meanwhile, we uniformly sample raw frames from the video: <Video>{video}</Video>. "
    + _SUBTITLE
    + _DIALOGUE,  # :150-155
    "frame_text": "###Human: We uniformly sample raw frames from the video: <Video>{video}</Video>. "
    + _HISTORY
    + _DIALOGUE,  # :156-160
    "face_text": "###Human: We uniformly extract facial informations from video: <Video>{face}</Video>. "
    + _HISTORY
    + _DIALOGUE,  # :161-165
    "face_frame_text": "###Human: we uniformly sample raw frames from the video: <Video>{video}</Video>. Meanwhile, "
    "We uniformly extract facial informations from video: <Video>{face}</Video>. " + _HISTORY + _DIALOGUE,  # :166-171
    "audio_text": "###Human: " + _AUDIO + _HISTORY + _DIALOGUE,  # :173-177
    "multiframe_audio_frame_text": "###Human: " + _FUSION + _AUDIO + "Meanwhile, we uniformly sample raw frames from "
    "the video: <Video>{video}</Video>. " + _HISTORY_TIGHT + _DIALOGUE,  # :191-197
    "multiface_audio_face_frame_text": "###Human: " + _FUSION + _AUDIO + "Meanwhile, We uniformly extract facial "
    "informations from video: <Video>{face}</Video>. Meanwhile, we uniformly sample raw frames from the video: "
    "<Video>{video}</Video>. " + _HISTORY_TIGHT + _DIALOGUE,  # :198-205
}
# Left out on purpose: the authors' `multiface_text` and `multiface_audio_face_text` (fusion without video and/or
# audio blocks). In our model a row with fusion placeholders must also carry video and audio placeholders (the fusion
# token is computed from that row's video and audio items), so those layouts cannot be fed.

AUTHORS_LAYOUTS = {"base": _BASE_LAYOUTS, "avamerg": _AVAMERG_LAYOUTS}

# Modalities present → the authors' layout name; a pair is (without a subtitle block, with one).
_LAYOUT_FOR = {
    frozenset({"fusion", "audio", "face", "video"}): ("multiface_audio_face_frame_text",) * 2,
    frozenset({"fusion", "audio", "video"}): ("multiframe_audio_frame_text",) * 2,
    frozenset({"audio", "face", "video"}): ("faceframe",) * 2,
    frozenset({"audio", "face"}): ("face",) * 2,
    frozenset({"audio", "video"}): ("frame",) * 2,
    frozenset({"audio"}): ("audioonly", "audio_text"),
    frozenset({"face", "video"}): ("face_frame", "face_frame_text"),
    frozenset({"face"}): ("faceonly", "face_text"),
    frozenset({"video"}): ("frameonly", "frame_text"),
    frozenset(): ("textonly",) * 2,
}
# AvaMERG always has a history block; it has no text-only layout.
_AVAMERG_LAYOUT_FOR = {key: (value[1],) * 2 for key, value in _LAYOUT_FOR.items() if key}

# ---- tasks ----------------------------------------------------------------------------------------------------------
_ERG_TRAIN_QUESTION = (  # base_dataset.py:415-422 (what the model was trained on)
    "Context: {context}\ncurrent user input:{current_input}\n[Interaction]You are an empathetic listener. Your goal is "
    "to understand the user’s emotions and intentions, and respond or comfort them with appropriate language that "
    "helps them feel understood and cared for. Avoid rushing into your response; instead, carefully engage in a "
    "step-by-step, in-depth analysis before providing an answer.Please analyze using Chain of Empathy (Firstly, Event "
    "scenario:Reflect on the event scenarios that arise from the ongoing dialogueSecondly, User’s emotion:please "
    "analyze User’s emotion mostly like emotions conveyed by the user(speaker),Thirdly, the emotion cause:Infer the "
    "underlying reasons for the user’s emotions.Fourthly, the goal to response:Determine the goal of your response in "
    "this particular instance, such as alleviating anxiety, offering reassurance, or expressing understanding.)in "
    "<think></think> tags and with Line break,then provide your empathic response:"
)
_ERG_INFERENCE_QUESTION = (  # base_dataset.py:401-409 (`question_only=True`, used by inference_hybird.py:141,152)
    "Context: {context}\ncurrent user input:{current_input}\n[Interaction] You are an empathetic listener，your goal "
    "is to understand the user’s emotions and intentions, and respond or comfort them with appropriate language that "
    "helps them feel understood and cared for. Avoid rushing into your response; instead, carefully engage in a "
    "step-by-step, in-depth analysis before providing an answer.Please analyze using Chain of Empathy (Firstly, Event "
    "scenario:Reflect on the event scenarios that arise from the ongoing dialogueSecondly, User's emotion:Analyze both "
    "the implicit and explicit emotions conveyed by the user,Thirdly, the emotion cause:Infer the underlying reasons "
    "for the user's emotions.Fourthly, the goal to response:Determine the goal of your response in this particular "
    "instance, such as alleviating anxiety, offering reassurance, or expressing understanding.)in <think></think> tags "
    "and with Line break, then provide your empathetic response:"
)


@dataclass(frozen=True)
class AuthorsTaskSpec:
    """One task as the authors prompt and supervise it.

    `questions` is the training list (templates: `{candidates}`, or `{context}` and `{current_input}` for the AvaMERG
    tasks); `eval_question` the index of the fixed evaluation question; `answer` the target template (`{answer}`),
    without the final `###`. `layouts` names the layout table ("base" or "avamerg"). `trained_on` lists the datasets
    and phases of the authors' configs that train it (empty: the authors have the question but no phase uses it).
    """

    name: str
    tag: str
    questions: tuple[str, ...]
    answer: str
    source: str
    uses_candidates: bool = False
    layouts: str = "base"
    eval_question: int = 0
    trained_on: tuple[str, ...] = ()


AUTHORS_TASK_SPECS: dict[str, AuthorsTaskSpec] = {
    spec.name: spec
    for spec in (
        AuthorsTaskSpec(
            name="ovmer",
            tag="[Recogn_OV]",
            questions=(  # base_dataset.py:278-283; drawn with random.choice (:285)
                "[Recogn_OV] Please recognize all possible emotional states of the character.",
                "[Recogn_OV] Can you identify every emotional state the character could be displaying?",
                "[Recogn_OV] Recognize all the possible emotional states the character might be feeling in this "
                "context.",
                "[Recogn_OV] Identify all possible emotions the character may be experiencing.",
                "[Recogn_OV] What are the various emotional states the character could potentially be in?",
            ),
            answer="The character's emotional state is {answer}.",  # :292; labels joined ", " (mercaptionplus:47)
            source="base_dataset.py:277-293 (func_get_qa_ovlabel)",
            trained_on=("MER-Caption+ (phase 3, half of its samples: label_type hybird)",),
        ),
        AuthorsTaskSpec(
            name="mer",
            tag="[Recognition]",
            questions=(  # base_dataset.py:306
                "[Recognition] Please select the label that can best describe the person's emotional state from the "
                "provided candidate labels: {candidates}.",
            ),
            answer="The most likely label is {answer}.",  # :313
            source="base_dataset.py:305-314 (func_get_qa_onehot_w_candidates)",
            uses_candidates=True,
            trained_on=("CREMA-D (phase 1.1, audio_text)", "CAER/FERV39k (phase 1.2, face_frame)"),
        ),
        AuthorsTaskSpec(
            name="mer_wo_candidates",
            tag="[Recognition]",
            questions=("[Recognition] Please recognize the character's most likely emotional state.",),  # :317
            answer="The character's emotional state is {answer}.",  # :324
            source="base_dataset.py:316-325 (func_get_qa_onehot_wo_candidates)",
            trained_on=("M3ED (phase 1.1, audio_text)",),
        ),
        AuthorsTaskSpec(
            name="msa",
            tag="",
            questions=(  # base_dataset.py:342 (no tag)
                "Please select the most likely sentiment label that can best describe the person's emotional state: "
                "positive, negative, neutral.",
            ),
            answer="The character's sentiment state is {answer}.",  # :349
            source="base_dataset.py:341-350 (func_get_qa_sentiment)",
        ),
        AuthorsTaskSpec(
            name="mir",
            tag="[Intent]",
            questions=(  # base_dataset.py:497 (no space after the tag)
                "[Intent]recognize speaker's intention from the provided candidate labels: {candidates}.",
            ),
            answer="{answer}",  # the bare annotated intent, capitalised ("Inform"): :501-504, mintrec_dataset.py:36
            source="base_dataset.py:493-505 (func_get_intention)",
            uses_candidates=True,
            trained_on=("MIntRec, MIntRec2.0 (phases 2 and 3)",),
        ),
        AuthorsTaskSpec(
            name="eri",
            tag="[Inference]",
            questions=(  # base_dataset.py:261-265 (= :478-482); drawn with random.choice (:267)
                "[Inference]Evaluate all available clues—visual, auditory, and physiological. What is the final "
                "conclusion about the subject's emotion, and which pieces of evidence were most critical to this "
                "determination?",
                "[Inference]From the combined evidence of speech, tone, and visual expression, construct a detailed "
                "summary of the subject's emotional journey and final inferred state.",
                "[Inference]Analyze the complete emotional narrative. Considering the visual context, vocal "
                "characteristics, and facial action units, what is the most accurate emotional assessment and why?",
                "[Inference]Based on the synthesis of multimodal data including video, audio, and facial expressions, "
                "what is the subject's comprehensive emotional state? Provide a detailed rationale with evidence from "
                "each modality.",
            ),
            answer="{answer}",  # the description itself (:274)
            source="base_dataset.py:259-275 (func_get_qa_description)",
            trained_on=("MER-Caption+ (phase 3, half of its samples)", "MERR-Fine (phase 3)"),
        ),
        AuthorsTaskSpec(
            name="erg",
            tag="[Interaction]",
            questions=(_ERG_TRAIN_QUESTION,),
            answer="{answer}",  # format_chain_of_empathy_authors (:425-430)
            source="base_dataset.py:390-435 (func_get_qa_empathic_response_with_coe)",
            layouts="avamerg",
            trained_on=("AvaMERG (phase 3, half of its samples: label_type hybird)",),
        ),
        AuthorsTaskSpec(
            name="erg_emotion",
            tag="",
            questions=(  # base_dataset.py:443-445: no tag and no candidate list in the trained question
                "Context: {context}\ncurrent speaker input:{current_input}\nBase on all input information,please "
                "analyze User’s emotion mostly like emotions conveyed by the user(speaker)",
            ),
            answer="The emotion of the speaker is {answer}.",  # :446
            source="base_dataset.py:438-451 (func_get_qa_emotion_recognition)",
            layouts="avamerg",
            trained_on=("AvaMERG (phase 3, the other half of its samples)",),
        ),
    )
}


def _clean_labels(labels: Iterable[str]) -> list[str]:
    return [" ".join(str(label).split()).lower() for label in labels]


def authors_candidates(candidates) -> str:
    """The candidate-label string for a prompt: verbatim when `candidates` is a string; for a sequence of labels, the
    authors' own spelling when it is one of their label sets (any order and case: [`AUTHORS_CANDIDATES`]), otherwise
    the labels joined with ", " (the separator of mintrec_dataset.py:25, crema_dataset.py:25)."""
    if isinstance(candidates, str):
        return candidates
    labels = [str(label) for label in candidates]
    if not labels:
        raise ValueError("candidates must not be empty")
    wanted = sorted(_clean_labels(labels))
    for spelt in AUTHORS_CANDIDATES.values():
        if sorted(_clean_labels(spelt.split(","))) == wanted:
            return spelt
    return ", ".join(labels)


def _history_text(history) -> str:
    """AvaMERG's history block: one "role: utterance" line per earlier turn, stripped (avamerg_dataset.py:85-91)."""
    if history is None:
        return ""
    if isinstance(history, str):
        return history
    lines = []
    for entry in history:
        if not isinstance(entry, Mapping):
            raise TypeError(
                f"each history entry must be a mapping with 'role' and 'utterance'/'content', got {entry!r}"
            )
        role = entry.get("role", "unknown")
        role = AUTHORS_HISTORY_ROLES.get(role, role)
        utterance = entry["utterance"] if "utterance" in entry else entry.get("content", "")
        if isinstance(utterance, list):  # chat content parts
            utterance = " ".join(part.get("text", "") for part in utterance if isinstance(part, Mapping))
        lines.append(f"{role}: {utterance}\n")
    return "".join(lines).strip()


def _pick_question(spec: AuthorsTaskSpec, question) -> str:
    if question is None:
        return spec.questions[spec.eval_question]
    if isinstance(question, random.Random):
        return question.choice(spec.questions)  # the authors' random.choice per sample
    if isinstance(question, bool) or not isinstance(question, int):
        raise TypeError(f"question must be None, an index, a random.Random or a string, got {question!r}")
    if not -len(spec.questions) <= question < len(spec.questions):
        raise ValueError(f"{spec.name} has {len(spec.questions)} question(s); index {question} is out of range")
    return spec.questions[question]


def authors_layout_name(task: str, modalities: Iterable[str], has_subtitle: bool = True) -> str:
    """The authors' `face_or_frame` layout used for `task` with these modalities (see [`render_authors_prompt`])."""
    spec = _spec(task)
    present = _modalities(modalities)
    table = _AVAMERG_LAYOUT_FOR if spec.layouts == "avamerg" else _LAYOUT_FOR
    if present not in table:
        names = sorted(sorted(key) for key in table)
        raise ValueError(
            f"the authors have no {spec.layouts} layout for the modalities {sorted(present)}; they have {names}"
        )
    return table[present][1 if has_subtitle else 0]


def _spec(task: str) -> AuthorsTaskSpec:
    if task not in AUTHORS_TASK_SPECS:
        raise ValueError(
            f"unknown task {task!r} for the authors' prompt style; expected one of {list(AUTHORS_TASK_SPECS)}"
        )
    return AUTHORS_TASK_SPECS[task]


def _modalities(modalities: Iterable[str]) -> frozenset:
    present = frozenset(modalities)
    unknown = present - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; expected among {MODALITIES}")
    if "fusion" in present and not {"audio", "video"} <= present:
        raise ValueError(
            "a fusion block needs the audio and video blocks too (the fusion token is computed from both)"
        )
    return present


def render_authors_prompt(
    task: str,
    modalities: Iterable[str],
    text: str | None = None,
    history: Sequence[Mapping] | str | None = None,
    context: str | None = None,
    candidates: Sequence[str] | str | None = None,
    question: int | random.Random | str | None = None,
    *,
    placeholders: Mapping[str, str] | None = None,
    layout: str | None = None,
    bos: bool = True,
) -> str:
    """The authors' prompt for one sample, up to and including "###Assistant: ".

    Args:
        task: a key of [`AUTHORS_TASK_SPECS`] ("ovmer", "mer", "mer_wo_candidates", "msa", "mir", "eri", "erg",
            "erg_emotion").
        modalities: the blocks present, among "fusion", "audio", "face", "video" (frames). Fusion needs audio and
            video. The layout is the authors' one for that set (phase 2/3: all four).
        text: the subtitle (MSA/MER/OV-MER/ERI), the utterance (MIR), or the current user input (ERG, erg_emotion).
            For the modality sets where the authors have a layout with and one without a subtitle block (audio only,
            video+face, face, video), `None` selects the one without; elsewhere `None` renders an empty subtitle, as
            the authors do for a missing transcript (mercaptionplus_dataset.py:65).
        history: ERG tasks only: the earlier turns, as dicts with "role" and "utterance" (AvaMERG) or "content" (chat
            messages; user/assistant become speaker/listener), or an already-rendered string.
        context: ERG tasks only: AvaMERG's `context` field (`None` → "").
        candidates: MER/MIR: the candidate labels ([`authors_candidates`]); required for those two tasks.
        question: `None` → the fixed evaluation question (the first of the list); an int → that question of the list;
            a `random.Random` → drawn from the list like the authors' training (`random.choice`); a string → that
            question text verbatim (e.g. [`authors_erg_inference_message`]).
        placeholders: modality → the ONE placeholder string to put in its block (default: the authors' own
            `<MultiHere>` etc.); the processor expands it to the token count.
        layout: force one of the authors' layout names (`AUTHORS_LAYOUTS[...]` keys) instead of choosing by modalities.
        bos: prefix the authors' bos `<|im_start|>` (their training did, base_dataset.py:895; their inference script
            did not).

    Returns:
        The prompt text. Tokenise it on its own (`add_special_tokens=False`) and the target separately, then
        concatenate, as the authors do (base_dataset.py:828-834): tokenising prompt + target as one string merges the
        trailing space with the target's first word.
    """
    spec = _spec(task)
    present = _modalities(modalities)
    dialogue = spec.layouts == "avamerg"
    if not dialogue and (history is not None or context is not None):
        raise ValueError(
            f"the authors' {task} prompt has no dialogue history or context (only erg and erg_emotion do)"
        )
    if spec.uses_candidates and candidates is None:
        raise ValueError(f"the authors' {task} question lists candidate labels; pass `candidates`")
    if not spec.uses_candidates and candidates is not None:
        raise ValueError(f"the authors' {task} question has no candidate list; use 'mer' or 'mir' for candidates")

    if isinstance(question, str):
        chosen = question
    else:
        chosen = _pick_question(spec, question)
        # The questions hold no braces besides their fields; format does not re-read the values.
        chosen = chosen.format(
            candidates=authors_candidates(candidates) if spec.uses_candidates else "",
            context="" if context is None else str(context),
            current_input="" if text is None else str(text),
        )

    table = AUTHORS_LAYOUTS[spec.layouts]
    if layout is None:
        layout = authors_layout_name(task, present, has_subtitle=dialogue or text is not None)
    elif layout not in table:
        raise ValueError(f"unknown {spec.layouts} layout {layout!r}; expected one of {list(table)}")
    template = table[layout]
    needed = {m for m in MODALITIES if "{" + m + "}" in template}
    if needed != set(present):
        raise ValueError(
            f"layout {layout!r} has the blocks {sorted(needed)}, but the modalities are {sorted(present)}"
        )

    marks = dict(AUTHORS_PLACEHOLDERS if placeholders is None else placeholders)
    missing = needed - set(marks)
    if missing:
        raise ValueError(f"no placeholder string given for {sorted(missing)}")
    subtitle = _history_text(history) if dialogue else ("" if text is None else str(text))
    # str.format does not re-read the values, so braces in user text are safe.
    prompt = template.format(**{m: marks.get(m, "") for m in MODALITIES}, subtitle=subtitle, question=chosen)
    return (AUTHORS_BOS_TOKEN if bos else "") + prompt


def format_chain_of_empathy_authors(fields: Mapping, response: str) -> str:
    """The ERG answer in the authors' words (base_dataset.py:425-430, paper Fig. 5), without the final "###":

        <think>Firstly, the event scenario of this conversation is: {event_scenario}
        Secondly, the emotion of the speaker is {speaker_emotion}
        Thirdly, the emotion cause is {emotion_cause}
        Fourthly, the goal to response is {goal_to_response}</think>
         {response}

    (the reply follows "</think>\\n" and one space). Values are used verbatim, as the authors do: no period is added
    and the emotion keeps its annotated case. `fields` has AvaMERG's `chain_of_empathy` keys.

    Raises:
        ValueError: a step or the reply is missing or empty.
    """
    if not isinstance(fields, Mapping):
        raise TypeError(f"fields must be a mapping, got {type(fields).__name__}")
    names = ("event_scenario", "speaker_emotion", "emotion_cause", "goal_to_response")
    values = {name: fields.get(name) for name in names}
    missing = [name for name, value in values.items() if not isinstance(value, str) or not value.strip()]
    if missing:
        raise ValueError(f"the chain of empathy needs all of {names}; missing or empty: {missing}")
    if not isinstance(response, str) or not response.strip():
        raise ValueError(f"the chain of empathy needs the listener's reply, got {response!r}")
    return (
        f"<think>Firstly, the event scenario of this conversation is: {values['event_scenario']}\n"
        f"Secondly, the emotion of the speaker is {values['speaker_emotion']}\n"
        f"Thirdly, the emotion cause is {values['emotion_cause']}\n"
        f"Fourthly, the goal to response is {values['goal_to_response']}</think>\n {response}"
    )


def format_authors_target(task: str, answer, eos: str | None = None) -> str:
    """The authors' training target for `task`, ending with "###" (base_dataset.py:830), plus `eos` when given (their
    collater appends the tokenizer's eos id, base_dataset.py:893-896).

    `answer` is the gold value: OV-MER a label or a list of labels (joined ", ", mercaptionplus_dataset.py:47; an
    empty list becomes "neutral", :46); MER / erg_emotion / MSA the label; MIR the intent, capitalised as in the
    authors' annotations ("ask for help" → "Ask for help", data/MIntRec*/…_ann.json); ERI the description; ERG a
    mapping with the four chain-of-empathy fields and "response" (→ [`format_chain_of_empathy_authors`]) or an
    already formatted string.
    """
    spec = _spec(task)
    if task == "erg" and isinstance(answer, Mapping):
        answer = format_chain_of_empathy_authors(answer, answer.get("response"))
    elif task == "ovmer" and not isinstance(answer, str):
        answer = ", ".join(str(label) for label in answer) or "neutral"
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"the {task} target needs a non-empty answer, got {answer!r}")
    if task == "mir":
        answer = answer[:1].upper() + answer[1:]
    return spec.answer.replace("{answer}", answer) + AUTHORS_TARGET_END + (eos or "")


def authors_task_name(task: str, *, dataset: str | None = None, candidates=None, protocol: str = "direct") -> str:
    """Our task name (prompts_nanoemox.TASK_NAMES) → the key of [`AUTHORS_TASK_SPECS`] that renders it.

    - "mer": AvaMERG's emotion sub-task (`dataset` "avamerg", any case) → "erg_emotion" (no candidate list, whatever
      the candidates); with candidates → "mer"; without → "mer_wo_candidates".
    - `protocol="paper"`: "msa" and "mer" are asked the OV-MER question ([`AUTHORS_PAPER_PROTOCOL_QUESTION_TASK`]).
    - "msa", "ovmer", "mir", "eri", "erg" keep their names.
    """
    if protocol not in ("direct", "paper"):
        raise ValueError(f"protocol must be 'direct' or 'paper', got {protocol!r}")
    if protocol == "paper" and task in AUTHORS_PAPER_PROTOCOL_QUESTION_TASK:
        return AUTHORS_PAPER_PROTOCOL_QUESTION_TASK[task]
    if task == "mer":
        if dataset is not None and str(dataset).lower() == "avamerg":
            return "erg_emotion"
        return "mer" if candidates else "mer_wo_candidates"
    return _spec(task).name


def authors_erg_inference_message(context: str, current_input: str) -> str:
    """The ERG question exactly as the authors' inference script built it: the `question_only` variant of the
    question (base_dataset.py:401-409: other wording, "，", straight apostrophes) followed without a separator by
    "current speaker input is:{current_input}" (inference_hybird.py:319-320). The model was trained on the other
    variant (the spec's question); pass this as `question=` only to reproduce the authors' evaluation."""
    return _ERG_INFERENCE_QUESTION.format(context=context, current_input=current_input) + (
        f"current speaker input is:{current_input}"
    )
