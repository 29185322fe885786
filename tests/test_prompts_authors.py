"""The authors' prompt style (processing/prompts_authors_nanoemox.py): exact strings, written by hand from the authors'
code (github.com/waHAHJIAHAO/Nano-EmoX at b08f985). Each docstring names the file and lines the fixture was read from."""

import ast
import random
from pathlib import Path

import pytest

from nanoemox_processing.prompts_authors_nanoemox import (
    AUTHORS_CANDIDATES,
    AUTHORS_LAYOUTS,
    AUTHORS_PAPER_PROTOCOL_QUESTION_TASK,
    AUTHORS_TASK_SPECS,
    authors_candidates,
    authors_erg_inference_message,
    authors_layout_name,
    authors_task_name,
    format_authors_target,
    format_chain_of_empathy_authors,
    render_authors_prompt,
)
from nanoemox_processing.prompts_nanoemox import MINTREC2_INTENTS, MINTREC_INTENTS

OURS = {"video": "<|emox_video|>", "face": "<|emox_face|>", "audio": "<|emox_audio|>", "fusion": "<|emox_fusion|>"}
ALL = ("video", "face", "audio", "fusion")

PHASE3_HEAD = (
    "<|im_start|>###Human: The audio and video merged info is: <Multi><|emox_fusion|></Multi>. "
    "The audio content is as follows: <Audio><|emox_audio|></Audio>. "
    "Meanwhile, We uniformly extract facial informations from video: <Video><|emox_face|></Video>. "
    "Meanwhile, we uniformly sample raw frames from the video: <Video><|emox_video|></Video>. "
)


def test_ovmer_phase3_prompt_is_the_authors_layout_with_the_first_question():
    """base_dataset.py:771-778 (layout `multiface_audio_face_frame_text`, configs/phase3.yaml:70), :278 (first OV
    question), bos `<|im_start|>` from models/tokenizer.py:34 + base_dataset.py:895."""
    prompt = render_authors_prompt("ovmer", ALL, text="I can't believe it.", placeholders=OURS)
    assert prompt == (
        PHASE3_HEAD + "The subtitle of this video is: <Subtitle>I can't believe it.</Subtitle>. "
        "Now, please answer my question based on all the provided information. "
        "[Recogn_OV] Please recognize all possible emotional states of the character. ###Assistant: "
    )
    assert prompt.count("<|emox_video|>") == prompt.count("<|emox_face|>") == 1
    assert render_authors_prompt("ovmer", ALL, text="x", placeholders=OURS, bos=False) == prompt[
        len("<|im_start|>") :
    ].replace("I can't believe it.", "x")


def test_default_placeholders_are_the_authors_tokens_and_a_missing_subtitle_is_empty():
    """config.py:129-133 (<MultiHere> <AudioHere> <FaceHere> <FrameHere>); an absent transcript is "" in the
    subtitle block (mercaptionplus_dataset.py:65)."""
    assert render_authors_prompt("eri", ALL, bos=False) == (
        "###Human: The audio and video merged info is: <Multi><MultiHere></Multi>. "
        "The audio content is as follows: <Audio><AudioHere></Audio>. "
        "Meanwhile, We uniformly extract facial informations from video: <Video><FaceHere></Video>. "
        "Meanwhile, we uniformly sample raw frames from the video: <Video><FrameHere></Video>. "
        "The subtitle of this video is: <Subtitle></Subtitle>. "
        "Now, please answer my question based on all the provided information. "
        "[Inference]Evaluate all available clues—visual, auditory, and physiological. What is the final conclusion "
        "about the subject's emotion, and which pieces of evidence were most critical to this determination? "
        "###Assistant: "
    )


def test_mir_uses_the_authors_mintrec2_candidate_string_and_a_capitalised_target():
    """base_dataset.py:497 ("[Intent]" without a space), mintrec2_dataset.py:25 (the verbatim candidate string, with
    its missing spaces), targets capitalised as in data/MIntRec2/train_MIntRec2_ann.json ("Ask for help")."""
    prompt = render_authors_prompt("mir", ALL, text="can you help me?", candidates=MINTREC2_INTENTS, placeholders=OURS)
    assert prompt == (
        PHASE3_HEAD + "The subtitle of this video is: <Subtitle>can you help me?</Subtitle>. "
        "Now, please answer my question based on all the provided information. "
        "[Intent]recognize speaker's intention from the provided candidate labels: acknowledge, advise, agree, "
        "apologise, arrange,ask for help, asking for opinions, care, comfort, complain,confirm, criticize, doubt, "
        "emphasize, explain,flaunt, greet, inform, introduce, invite,joke, leave, oppose, plan, praise,prevent, refuse, "
        "taunt, thank, warn. ###Assistant: "
    )
    assert format_authors_target("mir", "ask for help") == "Ask for help###"
    assert format_authors_target("mir", "Inform", eos="<|im_end|>") == "Inform###<|im_end|>"


def test_mer_with_candidates_phase1_audio_text_layout_has_no_human_prefix():
    """base_dataset.py:735-739 (`audio_text`: no "###Human: "), configs/phase1_1.yaml:78-81 (CREMA-D),
    crema_dataset.py:25 (candidates), :29-51 (CREMA-D's subtitle is the empty user message), :306/:313."""
    prompt = render_authors_prompt(
        "mer", ["audio"], text="", candidates=["happy", "sad", "anger", "fear", "disgust", "neutral"], bos=False
    )
    assert prompt == (
        "The audio content is as follows: <Audio><AudioHere></Audio>. "
        "The subtitle of this video is: <Subtitle></Subtitle>. "
        "Now, please answer my question based on all the provided information. "
        "[Recognition] Please select the label that can best describe the person's emotional state from the provided "
        "candidate labels: anger, disgust, fear, happy, neutral, sad. ###Assistant: "
    )
    assert authors_layout_name("mer", ["audio"]) == "audio_text"
    assert format_authors_target("mer", "anger") == "The most likely label is anger.###"


def test_mer_without_candidates_and_the_audio_only_layout():
    """base_dataset.py:316-325 (M3ED: configs/phase1_1.yaml:73-76, base_dataset.py:670-671) and :707-709
    (`audioonly`, chosen when there is no subtitle at all)."""
    assert render_authors_prompt("mer_wo_candidates", ["audio"], bos=False) == (
        "###Human: The audio content is as follows: <Audio><AudioHere></Audio>. "
        "Now, please answer my question based on all the provided information. "
        "[Recognition] Please recognize the character's most likely emotional state. ###Assistant: "
    )
    assert format_authors_target("mer_wo_candidates", "happy") == "The character's emotional state is happy.###"


def test_caer_face_frame_layout_puts_frames_before_the_face():
    """base_dataset.py:723-726 (`face_frame`, configs/phase1_2.yaml:73-76), caer_ferv39k_dataset.py:29."""
    prompt = render_authors_prompt("mer", ["video", "face"], candidates=AUTHORS_CANDIDATES["caer_ferv39k"], bos=False)
    assert prompt == (
        "###Human: We uniformly sample raw frames from the video: <Video><FrameHere></Video>. "
        "Meanwhile, We uniformly extract facial informations from video: <Video><FaceHere></Video>. "
        "Now, please answer my question based on all the provided information. "
        "[Recognition] Please select the label that can best describe the person's emotional state from the provided "
        "candidate labels: anger, disgust, fear, happy, neutral, sad, surprise. ###Assistant: "
    )
    # With a subtitle the authors' variant loses "###Human: " and "Meanwhile, " (base_dataset.py:727-733).
    assert render_authors_prompt("ovmer", ["video", "face"], text="hi", bos=False).startswith(
        "We uniformly sample raw frames from the video: <Video><FrameHere></Video>. We uniformly extract facial "
        "informations from video: <Video><FaceHere></Video>. The subtitle of this video is: <Subtitle>hi</Subtitle>. "
    )


def test_question_lists_fixed_evaluation_question_and_random_draws():
    """base_dataset.py:278-283 (5 OV questions), :261-265 (4 ERI questions), one question for the others; training
    draws with random.choice (:267, :285)."""
    sizes = {name: len(spec.questions) for name, spec in AUTHORS_TASK_SPECS.items()}
    assert sizes == {
        "ovmer": 5, "mer": 1, "mer_wo_candidates": 1, "msa": 1, "mir": 1, "eri": 4, "erg": 1, "erg_emotion": 1,
    }  # fmt: skip
    assert all(spec.eval_question == 0 for spec in AUTHORS_TASK_SPECS.values())
    last = render_authors_prompt("ovmer", ["audio"], text="t", question=4, bos=False)
    assert (
        "[Recogn_OV] What are the various emotional states the character could potentially be in? ###Assistant: "
        in last
    )
    rng = random.Random(0)
    drawn = {render_authors_prompt("eri", ["audio"], text="t", question=rng, bos=False) for _ in range(60)}
    assert len(drawn) == 4
    with pytest.raises(ValueError, match="out of range"):
        render_authors_prompt("eri", ["audio"], text="t", question=4)
    assert AUTHORS_TASK_SPECS["ovmer"].questions[2] == (
        "[Recogn_OV] Recognize all the possible emotional states the character might be feeling in this context."
    )


def test_erg_prompt_carries_context_history_and_the_trained_question():
    """avamerg_dataset.py:198-205 (AvaMERG `multiface_audio_face_frame_text`: "The dialogue history is:" without a
    space, "Now here is the dialogue context:\\n. "), :85-91 (history as "role: utterance" lines, stripped),
    base_dataset.py:415-422 (the ERG training question, curly apostrophes)."""
    history = [
        {"role": "user", "content": "I lost my job today."},
        {"role": "assistant", "content": "Oh no, what happened?"},
    ]
    prompt = render_authors_prompt(
        "erg", ALL, text="They closed the whole office.", history=history, context="job loss", placeholders=OURS
    )
    assert prompt == (
        PHASE3_HEAD + "The dialogue history is:<Dialogue History>speaker: I lost my job today.\n"
        "listener: Oh no, what happened?</Dialogue History>. Now here is the dialogue context:\n. "
        "Context: job loss\ncurrent user input:They closed the whole office.\n"
        "[Interaction]You are an empathetic listener. Your goal is to understand the user’s emotions and intentions, "
        "and respond or comfort them with appropriate language that helps them feel understood and cared for. "
        "Avoid rushing into your response; instead, carefully engage in a step-by-step, in-depth analysis before "
        "providing an answer.Please analyze using Chain of Empathy (Firstly, Event scenario:Reflect on the event "
        "scenarios that arise from the ongoing dialogueSecondly, User’s emotion:please analyze User’s emotion mostly "
        "like emotions conveyed by the user(speaker),Thirdly, the emotion cause:Infer the underlying reasons for the "
        "user’s emotions.Fourthly, the goal to response:Determine the goal of your response in this particular "
        "instance, such as alleviating anxiety, offering reassurance, or expressing understanding.)in <think></think> "
        "tags and with Line break,then provide your empathic response: ###Assistant: "
    )
    raw = [{"role": "speaker", "utterance": "a"}, {"role": "listener", "utterance": "b "}]
    assert "<Dialogue History>speaker: a\nlistener: b</Dialogue History>" in render_authors_prompt(
        "erg", ALL, text="c", history=raw, context="x"
    )


def test_erg_target_is_the_authors_chain_of_empathy():
    """base_dataset.py:425-430: "Firstly, … is: …\\nSecondly, the emotion of the speaker is …\\nThirdly, … \\nFourthly,
    …" inside <think></think>, then "\\n " and the reply; + "###" (:830)."""
    fields = {
        "event_scenario": "The speaker lost their job",
        "speaker_emotion": "sadness",
        "emotion_cause": "ten years at the same company",
        "goal_to_response": "offer support",
    }
    expected = (
        "<think>Firstly, the event scenario of this conversation is: The speaker lost their job\n"
        "Secondly, the emotion of the speaker is sadness\n"
        "Thirdly, the emotion cause is ten years at the same company\n"
        "Fourthly, the goal to response is offer support</think>\n I'm so sorry."
    )
    assert format_chain_of_empathy_authors(fields, "I'm so sorry.") == expected
    assert format_authors_target("erg", {**fields, "response": "I'm so sorry."}) == expected + "###"
    assert format_authors_target("erg", expected) == expected + "###"
    with pytest.raises(ValueError, match="emotion_cause"):
        format_chain_of_empathy_authors({**fields, "emotion_cause": " "}, "ok")
    with pytest.raises(ValueError, match="reply"):
        format_chain_of_empathy_authors(fields, "")


def test_avamerg_emotion_subtask_has_no_candidates():
    """base_dataset.py:443-446 (no tag, no candidate list; answer "The emotion of the speaker is X.")."""
    prompt = render_authors_prompt("erg_emotion", ALL, text="I failed.", context="exam", bos=False)
    assert prompt.endswith(
        "Now here is the dialogue context:\n. Context: exam\ncurrent speaker input:I failed.\nBase on all input "
        "information,please analyze User’s emotion mostly like emotions conveyed by the user(speaker) ###Assistant: "
    )
    assert "<Dialogue History></Dialogue History>" in prompt
    assert format_authors_target("erg_emotion", "sadness") == "The emotion of the speaker is sadness.###"
    with pytest.raises(ValueError, match="no candidate list"):
        render_authors_prompt("erg_emotion", ALL, text="x", candidates=["sadness"])


def test_avamerg_layout_variants():
    """avamerg_dataset.py:137-143 (`faceframe`: subtitle block, "Additionally, … facial informations", and no space
    after "###Assistant:"), :156-160 (`frame_text`: "The dialogue history is: " with a space)."""
    faceframe = render_authors_prompt("erg", ["audio", "video", "face"], text="c", context="x", bos=False)
    assert faceframe.startswith(
        "###Human: The audio content is as follows: <Audio><AudioHere></Audio>. Meanwhile, we uniformly sample raw "
        "frames from the video: <Video><FrameHere></Video>. Additionally, We uniformly extract facial informations "
        "from video: <Video><FaceHere></Video>. The subtitle of this video is: <Subtitle></Subtitle>. "
    )
    assert faceframe.endswith("with Line break,then provide your empathic response: ###Assistant:")
    assert render_authors_prompt("erg_emotion", ["video"], text="c", context="x", bos=False).startswith(
        "###Human: We uniformly sample raw frames from the video: <Video><FrameHere></Video>. The dialogue history "
        "is: <Dialogue History></Dialogue History>. Now here is the dialogue context:\n. "
    )
    # base_dataset.py:688-694: the non-AvaMERG `faceframe` says "faces information".
    assert "Additionally, We uniformly extract faces information from video" in render_authors_prompt(
        "ovmer", ["audio", "video", "face"], text="t"
    )
    assert len(AUTHORS_LAYOUTS["base"]) == 14 and len(AUTHORS_LAYOUTS["avamerg"]) == 9


def test_erg_inference_script_message():
    """base_dataset.py:401-409 (question_only variant: "[Interaction] You", "，", "User's") + inference_hybird.py:320
    ("current speaker input is:" appended without a separator)."""
    message = authors_erg_inference_message("ctx", "now")
    assert message.startswith(
        "Context: ctx\ncurrent user input:now\n[Interaction] You are an empathetic listener，your goal is to understand "
    )
    assert (
        "dialogueSecondly, User's emotion:Analyze both the implicit and explicit emotions conveyed by the user,"
        in message
    )
    assert message.endswith("with Line break, then provide your empathetic response:current speaker input is:now")
    prompt = render_authors_prompt("erg", ALL, text="now", context="ctx", question=message, bos=False)
    assert prompt.endswith("dialogue context:\n. " + message + " ###Assistant: ")


def test_msa_question_and_the_paper_protocol():
    """base_dataset.py:341-350 (MSA question, untagged; no phase config trains it), inference_hybird.py:136-138 (the
    paper scores MSA and MER through the OV question)."""
    assert AUTHORS_TASK_SPECS["msa"].questions == (
        "Please select the most likely sentiment label that can best describe the person's emotional state: positive, "
        "negative, neutral.",
    )
    assert AUTHORS_TASK_SPECS["msa"].trained_on == ()
    assert format_authors_target("msa", "positive") == "The character's sentiment state is positive.###"
    assert AUTHORS_PAPER_PROTOCOL_QUESTION_TASK == {"msa": "ovmer", "mer": "ovmer"}


def test_ovmer_target_joins_labels():
    """base_dataset.py:292, mercaptionplus_dataset.py:46-47 (labels joined ", "; none → "neutral")."""
    assert (
        format_authors_target("ovmer", ["happy", "excited"]) == "The character's emotional state is happy, excited.###"
    )
    assert format_authors_target("ovmer", []) == "The character's emotional state is neutral.###"


def test_candidate_strings_follow_the_authors_spelling():
    """mintrec_dataset.py:25, mintrec2_dataset.py:25, crema_dataset.py:25, caer_ferv39k_dataset.py:29."""
    assert authors_candidates(list(reversed(MINTREC_INTENTS))) == AUTHORS_CANDIDATES["mintrec"]
    assert authors_candidates([label.title() for label in MINTREC2_INTENTS]) == AUTHORS_CANDIDATES["mintrec2"]
    assert authors_candidates(["happy", "sad"]) == "happy, sad"
    assert authors_candidates("a,b") == "a,b"
    assert AUTHORS_CANDIDATES["mintrec2"].count(",") == 29


def test_invalid_requests_are_refused():
    """Our model computes fusion from the row's video and audio items (contract), so the authors' fusion-only
    layouts (base_dataset.py:752-763) are not offered; AvaMERG has no text-only layout (avamerg_dataset.py:134-206)."""
    with pytest.raises(ValueError, match="fusion block needs"):
        render_authors_prompt("ovmer", ["fusion", "audio", "face"])
    with pytest.raises(ValueError, match="unknown task"):
        render_authors_prompt("chat", ALL)
    with pytest.raises(ValueError, match="no dialogue history"):
        render_authors_prompt("ovmer", ALL, history=[{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="pass `candidates`"):
        render_authors_prompt("mir", ALL, text="x")
    with pytest.raises(ValueError, match="no avamerg layout"):
        render_authors_prompt("erg", [], text="x")
    with pytest.raises(ValueError, match="no placeholder string"):
        render_authors_prompt("ovmer", ["audio"], placeholders={"video": "<v>"})
    with pytest.raises(ValueError, match="has the blocks"):
        render_authors_prompt("ovmer", ALL, layout="audio_text")


def test_braces_in_user_text_are_literal():
    prompt = render_authors_prompt("erg", ALL, text="{question}", context="{context}", bos=False)
    assert "Context: {context}\ncurrent user input:{question}\n" in prompt


def test_module_is_stdlib_only():
    """Remote-code rule: the file ships with the processor and imports only the standard library."""
    path = Path(__file__).resolve().parents[1] / "processing" / "prompts_authors_nanoemox.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert roots <= {"__future__", "random", "collections", "dataclasses"}


def test_our_task_names_map_to_the_authors_tasks():
    """AvaMERG's emotion sub-task is its own question (base_dataset.py:438-451); MER with/without candidates
    (:305-325); the paper protocol asks MSA and MER the OV question (inference_hybird.py:136-138)."""
    assert authors_task_name("mer", dataset="AvaMERG", candidates=["sadness"]) == "erg_emotion"
    assert authors_task_name("mer", candidates=["happy"]) == "mer"
    assert authors_task_name("mer") == "mer_wo_candidates"
    assert authors_task_name("msa") == "msa"
    assert authors_task_name("msa", protocol="paper") == authors_task_name("mer", protocol="paper") == "ovmer"
    assert [authors_task_name(t) for t in ("ovmer", "mir", "eri", "erg")] == ["ovmer", "mir", "eri", "erg"]
    with pytest.raises(ValueError):
        authors_task_name("chat")


def test_chain_of_empathy_matches_an_output_of_the_authors_model():
    """evaluation/eval_merg_exp.py:399 (an ERG answer of the authors' model, as their scorer reads it with
    r"the emotion of the speaker is\\s+(\\w+)" inside <think>, :172-174)."""
    fields = {
        "event_scenario": "discussing fatigue",
        "speaker_emotion": "anxious",
        "emotion_cause": "feeling of declining health",
        "goal_to_response": "to express concern and validate feelings",
    }
    reply = "That sounds really tough. It's understandable to feel concerned about your energy levels as you age."
    assert format_chain_of_empathy_authors(fields, reply) == (
        "<think>Firstly, the event scenario of this conversation is: discussing fatigue\nSecondly, the emotion of the "
        "speaker is anxious\nThirdly, the emotion cause is feeling of declining health\nFourthly, the goal to response "
        "is to express concern and validate feelings</think>\n That sounds really tough. It's understandable to feel "
        "concerned about your energy levels as you age."
    )
