# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The chain-of-empathy target: format, parser, and the builder with a fake teacher (validation, retries, cache)."""

import importlib.util
import json
from pathlib import Path

import pytest

from modeling_nanoemox.data import Sample, write_manifest
from modeling_nanoemox.data.chain_of_empathy import (
    CHAIN_FIELDS,
    TEACHER_PROMPT_VERSION,
    ChainOfEmpathyBuilder,
    EmpathyTurn,
    TeacherCache,
    chain_problems,
    fill_erg_targets,
    format_chain_of_empathy,
    parse_chain_of_empathy,
    teacher_cache_key,
    teacher_messages,
)
from modeling_nanoemox.evaluation.backends import BackendError, ChatBackend
from nanoemox_processing.prompts_nanoemox import AVAMERG_LABELS

REPO = Path(__file__).resolve().parents[1]

FIELDS = {
    "event_scenario": "The speaker failed the driving test for the third time.",
    "speaker_emotion": "frustrated",
    "emotion_cause": "All the practice did not pay off.",
    "goal_to_response": "Validate the frustration and encourage another try.",
}
REPLY = "That sounds so discouraging. Third time's the charm is real, though — you're closer than you think."
VALID = (
    "1. Event scenario: The speaker is worried about a medical test.\n"
    "2. Speaker emotion: anxious\n"
    "3. Emotion cause: The results come next week.\n"
    "4. Goal of the response: Reassure them and offer company while they wait."
)
MISSING_STEP = "1. Event scenario: Something happened.\n2. Speaker emotion: anxious\n3. Emotion cause: Because."
OFF_LABEL = VALID.replace("2. Speaker emotion: anxious", "2. Speaker emotion: terrified")


class FakeTeacher:
    """A teacher backend stand-in: canned answers in order (the last repeats), counts its calls."""

    def __init__(self, *answers, identity="fake:teacher-v1"):
        self.answers = list(answers)
        self.identity = identity
        self.calls = 0
        self.seen = []

    def chat(self, messages, *, max_new_tokens=256):
        self.seen.append(messages)
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


def _turn(turn_id="t1", **overrides):
    values = {
        "id": turn_id,
        "text": "My test results come next week.",
        "history": [{"role": "user", "content": "I had a scan."}, {"role": "assistant", "content": "How did it go?"}],
        "response": "Waiting is the hardest part. I'm here if you want to talk while you wait.",
        "context": "medical worries",
        "fields": {},
    }
    values.update(overrides)
    return EmpathyTurn(**values)


# ---- format and parser ------------------------------------------------------------------------------------------


def test_format_is_the_documented_one_and_parses_back():
    target = format_chain_of_empathy(FIELDS, REPLY)
    assert target == (
        "<think>1. Event scenario: The speaker failed the driving test for the third time. "
        "2. Speaker emotion: frustrated. "
        "3. Emotion cause: All the practice did not pay off. "
        "4. Goal of the response: Validate the frustration and encourage another try.</think> " + REPLY
    )
    assert parse_chain_of_empathy(target) == {**FIELDS, "response": REPLY}
    # A period is added to steps without end punctuation; whitespace and case are normalised.
    messy = {**FIELDS, "event_scenario": "  Lost \n keys ", "speaker_emotion": " Sadness. "}
    parsed = parse_chain_of_empathy(format_chain_of_empathy(messy, " Oh no.\nLet's look. "))
    assert parsed["event_scenario"] == "Lost keys." and parsed["speaker_emotion"] == "sadness"
    assert parsed["response"] == "Oh no.\nLet's look."


def test_scorer_reads_the_speaker_emotion_of_the_format():
    from modeling_nanoemox.evaluation.scoring import extract_speaker_emotion, split_think

    target = format_chain_of_empathy(FIELDS, REPLY)
    assert extract_speaker_emotion(target) == "frustrated"
    assert split_think(target)[1] == REPLY


@pytest.mark.parametrize(
    "text, emotion",
    [
        (VALID, "anxious"),  # teacher style, newlines, no think block
        ("**Event scenario:** x\n**Speaker emotion:** The speaker feels Anxious.\n- Emotion cause: y\nGoal of your response: z", "anxious"),
        ("<think>1. Event scenario: x 2. Speaker's emotion: the emotion of the speaker is lonely. 3. Emotion cause: y 4. Goal to response: z</think>", "lonely"),
        ("Step 1: Event scenario: x\nStep 2: Speaker emotion: upset\nStep 3: Emotion cause: y\nStep 4: Goal of the response: z", "upset"),
    ],
)  # fmt: skip
def test_parser_tolerates_llm_variants(text, emotion):
    parsed = parse_chain_of_empathy(text)
    assert parsed["speaker_emotion"] == emotion
    assert all(parsed[name] for name in CHAIN_FIELDS)
    assert parsed["response"] is None


def test_parser_reports_absent_steps_and_ignores_unnumbered_mid_line_headers():
    parsed = parse_chain_of_empathy(
        "<think>1. Event scenario: she said speaker emotion: none 2. Speaker emotion: sad</think> Hi."
    )
    assert parsed["event_scenario"] == "she said speaker emotion: none"
    assert parsed["speaker_emotion"] == "sad" and parsed["emotion_cause"] is None and parsed["response"] == "Hi."
    assert parse_chain_of_empathy("just a reply") == dict.fromkeys((*CHAIN_FIELDS, "response"))
    assert parse_chain_of_empathy(None)["response"] is None
    with pytest.raises(TypeError):
        parse_chain_of_empathy(42)


def test_format_rejects_incomplete_input():
    with pytest.raises(ValueError, match="emotion_cause"):
        format_chain_of_empathy({**FIELDS, "emotion_cause": " "}, REPLY)
    with pytest.raises(ValueError, match="reply"):
        format_chain_of_empathy(FIELDS, "")
    with pytest.raises(ValueError, match="think"):
        format_chain_of_empathy({**FIELDS, "event_scenario": "a </think> b"}, REPLY)
    with pytest.raises(TypeError):
        format_chain_of_empathy(["not", "a", "mapping"], REPLY)


def test_chain_problems():
    assert chain_problems(parse_chain_of_empathy(VALID)) == []
    assert chain_problems(parse_chain_of_empathy(MISSING_STEP)) == ["step 'Goal of the response' is missing"]
    assert "not one of the 25 allowed labels" in chain_problems(parse_chain_of_empathy(OFF_LABEL))[0]
    assert (
        "differs from the annotated 'worry'" in chain_problems(parse_chain_of_empathy(VALID), gold_emotion="Worry")[0]
    )
    assert chain_problems(parse_chain_of_empathy(OFF_LABEL), labels=None) == []


# ---- the builder ------------------------------------------------------------------------------------------------


def test_complete_steps_are_templated_without_the_teacher():
    teacher = FakeTeacher(VALID)
    targets, report = ChainOfEmpathyBuilder(teacher).build([_turn(fields=FIELDS, response=REPLY)])
    assert targets == {"t1": format_chain_of_empathy(FIELDS, REPLY)}
    assert report.counts() == {"templated": 1, "teacher": 0, "cached": 0, "failed": 0, "teacher_calls": 0}
    assert teacher.calls == 0


def test_valid_teacher_answer_is_accepted_and_cached(tmp_path):
    cache = tmp_path / "cache.jsonl"
    teacher = FakeTeacher(VALID)
    turn = _turn()
    targets, report = ChainOfEmpathyBuilder(teacher, cache=cache).build([turn])
    assert report.teacher == ["t1"] and report.failed == {} and teacher.calls == 1
    assert parse_chain_of_empathy(targets["t1"]) == {
        "event_scenario": "The speaker is worried about a medical test.",
        "speaker_emotion": "anxious",
        "emotion_cause": "The results come next week.",
        "goal_to_response": "Reassure them and offer company while they wait.",
        "response": turn.response,  # the gold reply, never the teacher's
    }
    prompt = teacher.seen[0][-1]["content"]
    assert "Listener's reply: Waiting is the hardest part." in prompt and "conflicted, sadness" in prompt
    assert "Speaker: I had a scan." in prompt and "Listener: How did it go?" in prompt
    record = json.loads(cache.read_text(encoding="utf-8"))
    assert record["key"] == teacher_cache_key(turn, teacher.identity)
    assert record["teacher"] == teacher.identity and record["prompt_version"] == TEACHER_PROMPT_VERSION
    assert record["id"] == "t1" and record["fields"]["speaker_emotion"] == "anxious"


def test_second_run_hits_the_cache(tmp_path):
    cache = tmp_path / "cache.jsonl"
    turns = [_turn("a"), _turn("b", text="Another worry.")]
    first = FakeTeacher(VALID)
    targets_first, report_first = ChainOfEmpathyBuilder(first, cache=cache).build(turns)
    assert first.calls == 2 and len(report_first.teacher) == 2

    again = FakeTeacher(VALID)  # same identity, fresh call counter
    targets_again, report_again = ChainOfEmpathyBuilder(again, cache=cache).build(turns)
    assert again.calls == 0 and report_again.cached == ["a", "b"] and report_again.teacher_calls == 0
    assert targets_again == targets_first

    other = FakeTeacher(VALID, identity="fake:another-teacher")  # another teacher never reuses those answers
    _, report_other = ChainOfEmpathyBuilder(other, cache=TeacherCache(cache)).build(turns)
    assert other.calls == 2 and report_other.cached == []


@pytest.mark.parametrize(
    "bad, problem",
    [(MISSING_STEP, "step 'Goal of the response' is missing"), (OFF_LABEL, "'terrified' is not one of the 25")],
)
def test_invalid_answers_are_retried_then_reported(tmp_path, bad, problem):
    cache = tmp_path / "cache.jsonl"
    teacher = FakeTeacher(bad)
    targets, report = ChainOfEmpathyBuilder(teacher, cache=cache, max_attempts=3).build([_turn(), _turn("t2")])
    assert targets == {} and teacher.calls == 6  # 3 attempts for each of the two turns
    assert set(report.failed) == {"t1", "t2"} and problem in report.failed["t1"]
    assert "no valid answer in 3 attempts" in report.failed["t1"]
    assert not cache.exists()  # nothing invalid is cached
    # The retry tells the teacher why its answer was rejected.
    retry = teacher.seen[-1]
    assert retry[-2] == {"role": "assistant", "content": bad} and problem in retry[-1]["content"]


def test_a_retry_can_succeed_and_backend_errors_count_as_attempts():
    teacher = FakeTeacher(BackendError("HTTP 503"), OFF_LABEL, VALID)
    targets, report = ChainOfEmpathyBuilder(teacher, max_attempts=3).build([_turn()])
    assert report.teacher == ["t1"] and teacher.calls == 3 and report.teacher_calls == 3
    assert parse_chain_of_empathy(targets["t1"])["speaker_emotion"] == "anxious"

    failing = FakeTeacher(BackendError("connection refused"))
    _, report = ChainOfEmpathyBuilder(failing, max_attempts=2).build([_turn()])
    assert failing.calls == 2 and "connection refused" in report.failed["t1"]


def test_reasoning_before_the_answer_is_ignored():
    answer = "<think>Let me think. Speaker emotion: maybe terrified?</think>\n" + VALID
    targets, report = ChainOfEmpathyBuilder(FakeTeacher(answer)).build([_turn()])
    assert report.teacher == ["t1"] and parse_chain_of_empathy(targets["t1"])["speaker_emotion"] == "anxious"


def test_batching_backends_get_one_batch_per_round():
    class BatchingTeacher(ChatBackend):
        identity = "fake:batching"

        def __init__(self):
            self.batches = []

        def chat(self, messages, *, max_new_tokens=256):
            raise AssertionError("a batching backend is asked in batches")

        def chat_batch(self, batch, *, max_new_tokens=256):
            self.batches.append(len(batch))
            return [VALID if len(self.batches) > 1 else OFF_LABEL] * len(batch)

    teacher = BatchingTeacher()
    _, report = ChainOfEmpathyBuilder(teacher).build([_turn("a"), _turn("b", text="Other."), _turn("c", text="3")])
    assert teacher.batches == [3, 3] and report.teacher == ["a", "b", "c"] and report.teacher_calls == 6


def test_only_backends_that_really_batch_get_batches():
    """The inherited `ChatBackend.chat_batch` is a loop of `chat`: such a backend is asked turn by turn (a failure
    then costs one call, not a batch). A duck-typed teacher with its own `chat_batch` is batched."""

    class LoopingTeacher(ChatBackend):
        identity = "fake:looping"

        def __init__(self):
            self.calls = 0

        def chat(self, messages, *, max_new_tokens=256):
            self.calls += 1
            return VALID

    looping = LoopingTeacher()
    targets, _ = ChainOfEmpathyBuilder(looping).build([_turn("a"), _turn("b", text="Other.")])
    assert looping.calls == 2 and set(targets) == {"a", "b"}

    class DuckBatchingTeacher:  # no ChatBackend base: any object with `identity`, `chat` and `chat_batch`
        identity = "fake:duck"
        batches = []

        def chat(self, messages, *, max_new_tokens=256):
            raise AssertionError("a batching backend is asked in batches")

        def chat_batch(self, batch, *, max_new_tokens=256):
            self.batches.append(len(batch))
            return [VALID] * len(batch)

    duck = DuckBatchingTeacher()
    targets, _ = ChainOfEmpathyBuilder(duck).build([_turn("a"), _turn("b", text="Other.")])
    assert duck.batches == [2] and set(targets) == {"a", "b"}


def test_annotated_emotion_constrains_the_teacher():
    turn = _turn(fields={"speaker_emotion": "worry"})
    assert 'annotated as "worry"' in teacher_messages(turn)[-1]["content"]
    teacher = FakeTeacher(VALID, VALID.replace("anxious", "worry"))
    targets, report = ChainOfEmpathyBuilder(teacher).build([turn])
    assert teacher.calls == 2 and parse_chain_of_empathy(targets["t1"])["speaker_emotion"] == "worry"


def test_turns_that_cannot_get_a_target_are_reported():
    turns = [_turn("no_reply", response=None), _turn("no_steps"), _turn("partial", fields={"event_scenario": "x"})]
    targets, report = ChainOfEmpathyBuilder(teacher=None).build(turns)
    assert targets == {}
    assert report.failed["no_reply"] == "no listener reply to explain"
    assert "no teacher given" in report.failed["no_steps"] and "['event_scenario']" in report.failed["partial"]


def test_builder_checks_its_arguments():
    class Nameless:
        def chat(self, messages, max_new_tokens=256):
            return VALID

    with pytest.raises(ValueError, match="identity"):
        ChainOfEmpathyBuilder(Nameless())
    with pytest.raises(ValueError, match="max_attempts"):
        ChainOfEmpathyBuilder(FakeTeacher(VALID), max_attempts=0)


def test_cache_survives_a_torn_line(tmp_path):
    cache = tmp_path / "cache.jsonl"
    ChainOfEmpathyBuilder(FakeTeacher(VALID), cache=cache).build([_turn()])
    with cache.open("a", encoding="utf-8") as handle:
        handle.write('{"key": "abc", "fie')  # an interrupted write
    teacher = FakeTeacher(VALID)
    _, report = ChainOfEmpathyBuilder(teacher, cache=cache).build([_turn()])
    assert report.cached == ["t1"] and teacher.calls == 0 and len(TeacherCache(cache)) == 1


# ---- manifests --------------------------------------------------------------------------------------------------


def test_turn_from_sample():
    sample = Sample(
        id="s",
        task="erg",
        text="hi",
        history=[{"role": "user", "content": "a"}],
        target=format_chain_of_empathy(FIELDS, REPLY),
        reference={"emotion": "frustrated", "context": "exam"},
    )
    turn = EmpathyTurn.from_sample(sample)
    assert turn.fields == FIELDS and turn.response == REPLY and turn.context == "exam" and turn.complete
    bare = EmpathyTurn.from_sample(Sample(id="b", task="erg", text="hi", target="I'm sorry.", reference="sadness"))
    assert bare.response == "I'm sorry." and bare.fields == {"speaker_emotion": "sadness"} and not bare.complete
    with pytest.raises(ValueError, match="erg"):
        EmpathyTurn.from_sample(Sample(id="m", task="mer"))


def test_fill_erg_targets_keeps_other_tasks_and_drops_failures_visibly():
    samples = [
        Sample(id="done", task="erg", text="x", reference={**FIELDS, "response": REPLY}),
        Sample(id="needs", task="erg", text="My test results come next week.", target="I'm here for you."),
        Sample(id="hopeless", task="erg", text="?"),
        Sample(
            id="emotion",
            task="mer",
            text="x",
            candidates=list(AVAMERG_LABELS),
            target="The most likely label is proud.",
        ),
    ]
    kept, report = fill_erg_targets(samples, ChainOfEmpathyBuilder(FakeTeacher(VALID)))
    assert [s.id for s in kept] == ["done", "needs", "emotion"]
    assert report.templated == ["done"] and report.teacher == ["needs"] and list(report.failed) == ["hopeless"]
    assert kept[1].target.endswith("</think> I'm here for you.") and kept[2] is samples[3]
    assert samples[1].target == "I'm here for you."  # the input samples are not modified


# ---- the CLI ----------------------------------------------------------------------------------------------------


def _recipe(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _avamerg_file(path: Path) -> Path:
    def turn(turn_id, history, response, chain):
        entry = {"turn_id": str(turn_id), "context": "", "dialogue_history": history, "response": response}
        if chain:
            entry["chain_of_empathy"] = chain
        return entry

    said = [{"role": "speaker", "utterance": "My test results come next week."}]
    more = [*said, {"role": "listener", "utterance": "Waiting is hard."}, {"role": "speaker", "utterance": "Yes."}]
    conversation = {
        "conversation_id": "01",
        "speaker_profile": {"ID": "9"},
        "turns": [
            turn(0, said, "Waiting is hard.", {**FIELDS, "speaker_emotion": "anxious"}),
            turn(1, more, "I'm here.", None),
        ],
    }
    path.write_text(json.dumps([conversation]), encoding="utf-8")
    return path


def test_build_cot_empathy_cli(tmp_path, monkeypatch, capsys):
    build = _recipe("build_cot_empathy")
    source = _avamerg_file(tmp_path / "train.json")
    output = tmp_path / "cot.jsonl"

    # Templating only: the annotated turn gets its target, the other is reported.
    assert build.main(["--input", str(source), "--output", str(output)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["templated"], summary["teacher"], summary["cached"], summary["failed"]) == (1, 0, 0, 1)
    assert summary["failed_ids"] == ["dia01utt2_9-erg"] and summary["tasks"] == {"erg": 1, "mer": 1}
    failed = [json.loads(line) for line in (tmp_path / "cot.jsonl.failed.jsonl").read_text().splitlines()]
    assert failed[0]["id"] == "dia01utt2_9-erg" and "no teacher" in failed[0]["reason"]

    # A manifest input with a teacher; the rerun is served from the cache.
    manifest = write_manifest(
        [Sample(id="d1", task="erg", text="My test results come next week.", video="video/d1.mp4", target="I'm here."),
         Sample(id="m1", task="mer", text="x", candidates=["happy", "sad"], target="The most likely label is sad.")],
        tmp_path / "dialogues.jsonl",
    )  # fmt: skip
    teacher = FakeTeacher(VALID)
    created = []

    def fake_backend(kind, *, model=None, base_url=None, api_key_env="OPENAI_API_KEY"):
        created.append((kind, model, base_url))
        return teacher

    monkeypatch.setattr(build, "build_backend", fake_backend)
    args = f"--input {manifest} --output {output} --teacher openai --model m --base_url http://x/v1".split()
    assert build.main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["templated"], summary["teacher"], summary["cached"], summary["failed"]) == (0, 1, 0, 0)
    assert created == [("openai", "m", "http://x/v1")] and teacher.calls == 1
    assert summary["teacher_identity"] == "fake:teacher-v1" and Path(summary["cache"]).is_file()
    assert not (tmp_path / "cot.jsonl.failed.jsonl").exists()  # the stale list of the first run is gone
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in rows] == ["d1", "m1"] and rows[0]["video"] == "video/d1.mp4"
    assert parse_chain_of_empathy(rows[0]["target"])["response"] == "I'm here."

    assert build.main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["teacher"], summary["cached"], summary["teacher_calls"]) == (0, 1, 0) and teacher.calls == 1

    assert build.main(["--input", str(manifest), "--output", str(output), "--model", "m"]) == 1
    assert "--teacher" in capsys.readouterr().err


def test_authors_style_target_and_it_parses_back():
    """`style="authors"`: the authors' chain (datasets/datasets/base_dataset.py:425-430 of waHAHJIAHAO/Nano-EmoX @
    b08f985; paper Fig. 5), values verbatim, the reply after "</think>\\n" and one space; parse reads it back."""
    from modeling_nanoemox.data.chain_of_empathy import format_chain_of_empathy, parse_chain_of_empathy

    fields = {"event_scenario": "The speaker lost their job.", "speaker_emotion": "Sadness",
              "emotion_cause": "ten years of work are gone", "goal_to_response": "offer support"}  # fmt: skip
    target = format_chain_of_empathy(fields, "I'm so sorry.", style="authors")
    assert target == (
        "<think>Firstly, the event scenario of this conversation is: The speaker lost their job.\n"
        "Secondly, the emotion of the speaker is Sadness\n"
        "Thirdly, the emotion cause is ten years of work are gone\n"
        "Fourthly, the goal to response is offer support</think>\n I'm so sorry."
    )
    assert parse_chain_of_empathy(target) == {
        "event_scenario": "The speaker lost their job.", "speaker_emotion": "sadness",
        "emotion_cause": "ten years of work are gone", "goal_to_response": "offer support", "response": "I'm so sorry.",
    }  # fmt: skip
    assert format_chain_of_empathy(fields, "ok", style="standard") == format_chain_of_empathy(fields, "ok")
    with pytest.raises(ValueError, match="style must be one of"):
        format_chain_of_empathy(fields, "ok", style="chat")
