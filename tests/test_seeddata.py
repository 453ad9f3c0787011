"""The seed-data domain: loading with configurable fields, disjoint deterministic stratified splits, levels,
numeric / code / judge scoring, the judge's verdicts, and `ioa diagnose` on seed data with a user edit."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from ioa.adapter import InvalidReply
from ioa.config import DomainConfig, RunConfig
from ioa.diagnosis import diagnose
from ioa.domains import Domain, get_domain
from ioa.domains.base import SPLITS
from ioa.domains.gsm8k import count_steps, level_of
from ioa.domains.seeddata import (
    SeedDataDomain,
    load_seed_data,
    open_seed_domain,
    partition,
    seed_domain_from_file,
)
from ioa.errors import ConfigError, DataError, DomainError
from ioa.graph import Edge
from ioa.judge import Judge, parse_verdict
from ioa.models.base import ChatRequest, Generation
from ioa.rundir import RunDir
from ioa.sandbox import isolation_mode
from ioa.taxonomy import read_taxonomy
from seed_support import MODULES, FakeTeacher

IDS = [m[1] for m in MODULES]


def gsm8k_answer(steps: int, final: int) -> str:
    return "".join(f"Step {k}: 1+{k} = <<1+{k}={1 + k}>>{1 + k}.\n" for k in range(steps)) + f"#### {final}"


def write_jsonl(path: Path, rows: Sequence[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """GSM8K-shaped seeds: 8 per module (80), answers with 1-6 steps; a test file sharing one prompt."""
    rows = [{"question": f"Problem {k} about [{m}]: {k + 2} things", "answer": gsm8k_answer(1 + (k + i) % 6, k)}
            for k in range(8) for i, m in enumerate(IDS)]  # fmt: skip
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", rows)
    bench = [{"question": f"A new question about [{m}] and more", "answer": "#### 5"} for m in IDS[:4]]
    write_jsonl(folder / "test.jsonl", [*bench, rows[0]])  # rows[0] also in test: it must leave the seeds
    return folder


def seed_config(folder: Path, **options: object) -> DomainConfig:
    return DomainConfig(name="seed", data_path=folder,
                        options={"benchmark": "test.jsonl", "min_items_per_module": 3, **options})  # fmt: skip


@pytest.fixture
def domain(data_dir: Path, tmp_path: Path) -> SeedDataDomain:
    return open_seed_domain(seed_config(data_dir), FakeTeacher(), tmp_path / "run" / "taxonomy.yaml")


# ------------------------------------------------------------------------------------- loading


def test_gsm8k_shaped_answers_give_final_answer_solution_and_steps(data_dir: Path) -> None:
    data = load_seed_data(seed_config(data_dir))
    record = next(r for r in data.seeds if r.line == 2)
    assert record.id == "train-2" and record.answer == "0" and record.steps == count_steps(gsm8k_answer(2, 0))
    assert record.solution == "Step 0: 1+0 = 1.\nStep 1: 1+1 = 2.\n#### 0"  # calculator annotations removed


def test_a_seed_that_is_also_a_benchmark_prompt_is_dropped(data_dir: Path) -> None:
    data = load_seed_data(seed_config(data_dir))
    assert len(data.seeds) == 79 and data.left_out == 1 and all(r.line != 1 for r in data.seeds)
    assert [r.id for r in data.benchmark][:2] == ["test-1", "test-2"]


def test_field_names_are_configurable_and_a_plain_answer_is_the_final_answer(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mine.jsonl", [{"q": "What is 6 times 7?", "a": 42}, {"q": "Half of 9?", "a": "4.5"}])
    options = {"question_field": "q", "answer_field": "a"}
    data = load_seed_data(DomainConfig(name="seed", data_path=path, options=options))
    assert [(r.id, r.prompt, r.answer, r.steps) for r in data.seeds] == [
        ("mine-1", "What is 6 times 7?", "42", None), ("mine-2", "Half of 9?", "4.5", None)]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "options", "message"),
    [
        ("not json", {}, "line 2 is not valid JSON"),
        ('["a list"]', {}, "line 2 is not a JSON object"),
        ('{"question": "", "answer": "1"}', {}, "line 2 has no text in 'question'"),
        ('{"question": "q?"}', {}, "line 2 has no text in 'answer'"),
        ('{"question": "q?", "answer": "steps #### "}', {}, "line 2 has an empty final answer"),
        ('{"question": "q?", "answer": "x"}', {"scoring": "code"}, "line 2 has no tests in 'tests'"),
    ],
)
def test_a_bad_line_is_a_data_error_naming_file_and_line(
    tmp_path: Path, line: str, options: dict[str, str], message: str
) -> None:
    path = tmp_path / "seeds.jsonl"
    path.write_text('{"question": "fine?", "answer": "1", "tests": "assert True"}\n' + line + "\n")
    with pytest.raises(DataError, match=message) as exc:
        load_seed_data(DomainConfig(name="seed", data_path=path, options=options))
    assert str(path) in str(exc.value) and "question_field" in exc.value.fix


def test_unknown_or_inconsistent_options_are_config_errors(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"domain\.options: max_seed_item: Extra inputs are not permitted"):
        load_seed_data(DomainConfig(name="seed", data_path=data_dir, options={"max_seed_item": 3}))
    with pytest.raises(ConfigError, match="probe_share \\+ gate_share must leave a share for train"):
        load_seed_data(DomainConfig(name="seed", data_path=data_dir, options={"probe_share": 0.6, "gate_share": 0.5}))
    with pytest.raises(ConfigError, match="scoring: Input should be 'numeric', 'code' or 'judge'"):
        load_seed_data(DomainConfig(name="seed", data_path=data_dir, options={"scoring": "bleu"}))


def test_missing_files_are_domain_errors(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DomainError, match=r"needs domain\.data_path"):
        load_seed_data(DomainConfig(name="seed"))
    with pytest.raises(DomainError, match=r"seed file .*nothing\.jsonl does not exist"):
        load_seed_data(DomainConfig(name="seed", data_path=tmp_path / "nothing.jsonl"))
    with pytest.raises(DomainError, match=r"benchmark file .*other\.jsonl does not exist"):
        load_seed_data(DomainConfig(name="seed", data_path=data_dir, options={"benchmark": "other.jsonl"}))


def test_max_seed_items_is_a_fixed_subset_that_only_grows(data_dir: Path) -> None:
    few = {r.id for r in load_seed_data(seed_config(data_dir, max_seed_items=10)).seeds}
    more = {r.id for r in load_seed_data(seed_config(data_dir, max_seed_items=25)).seeds}
    assert len(few) == 10 and len(more) == 25 and few < more
    assert few == {r.id for r in load_seed_data(seed_config(data_dir, max_seed_items=10)).seeds}
    assert few != {f"train-{k}" for k in range(2, 12)}  # not simply the first lines


# ------------------------------------------------------------------------------------- get_domain


def test_get_domain_needs_an_existing_taxonomy(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DomainError, match="has no taxonomy yet") as exc:
        get_domain(seed_config(data_dir))
    assert "ioa diagnose" in exc.value.fix
    with pytest.raises(DomainError, match="does not exist"):
        get_domain(seed_config(data_dir, taxonomy=str(tmp_path / "missing.yaml")))


def test_get_domain_reads_the_taxonomy_the_teacher_built(data_dir: Path, domain: SeedDataDomain) -> None:
    again = get_domain(seed_config(data_dir, taxonomy=str(domain.build.path)))
    assert isinstance(again, SeedDataDomain) and isinstance(again, Domain)
    assert again.modules() == domain.modules()
    assert again.items("add", 5, 3, "probe") == domain.items("add", 5, 3, "probe")
    alias = get_domain(DomainConfig(name="seeddata", data_path=data_dir, options=seed_config(
        data_dir, taxonomy=str(domain.build.path)).options))
    assert again.name == "seed" and alias.modules() == domain.modules()


def test_built_in_domains_still_refuse_options() -> None:
    with pytest.raises(DomainError, match="takes no options"):
        get_domain(DomainConfig(name="arithmetic", options={"x": 1}))


# ------------------------------------------------------------------------------------- splits and levels


def test_partition_is_stratified_disjoint_and_fixed() -> None:
    ids = [f"i{k}" for k in range(20)]
    splits = partition(ids, "m", 0.1, 0.1, seed=0)
    assert Counter(splits.values()) == {"probe": 2, "gate": 2, "train": 16}
    assert splits == partition(list(reversed(ids)), "m", 0.1, 0.1, seed=0)  # input order does not matter
    assert splits != partition(ids, "m", 0.1, 0.1, seed=1)
    assert [Counter(partition(ids[:n], "m", 0.1, 0.1, 0).values()) for n in (1, 2, 3)] == [
        {"probe": 1}, {"probe": 1, "train": 1}, {"probe": 1, "gate": 1, "train": 1}]  # fmt: skip


def test_splits_are_disjoint_cover_every_seed_and_do_not_depend_on_the_call_seed(domain: SeedDataDomain) -> None:
    seen: dict[str, str] = {}
    for module in domain.modules():
        for split in SPLITS:
            for seed in (0, 1):
                for item in domain.items(module.id, 1000, seed, split):
                    assert seen.setdefault(item.id, split) == split, f"{item.id} in {seen[item.id]} and {split}"
                    assert item.module == module.id and item.meta["split"] == split
        counts = Counter(domain.split_of(r.id) for r in domain._by_module[module.id])
        assert counts["probe"] >= 1 and counts["gate"] >= 1 and counts["train"] >= counts["probe"] * 4
    seeds = {r.id for r in domain.data.seeds}
    assert {i for i, s in seen.items() if s != "benchmark"} == seeds
    assert {i for i, s in seen.items() if s == "benchmark"} == {r.id for r in domain.data.benchmark}


def test_items_are_deterministic_and_vary_with_the_seed(domain: SeedDataDomain) -> None:
    first = domain.items("add", 4, 0, "train")
    assert len(first) == 4 and first == domain.items("add", 4, 0, "train")
    picks = {domain.items("add", 1, seed, "train", level=1)[0].id for seed in range(10)}
    assert len(picks) > 1  # the call's seed shuffles within a level (the split stays fixed)


def test_levels_from_steps_for_gsm8k_answers_or_the_tier(domain: SeedDataDomain, tmp_path: Path) -> None:
    for item in domain.items("mul", 100, 0, "train"):
        record = next(r for r in domain.data.seeds if r.id == item.id)
        assert item.level == level_of(record.steps)
    level_two = domain.items("mul", 100, 0, "train", level=2)
    assert level_two and {i.level for i in level_two} == {2}
    assert {i.id for i in level_two} == {i.id for i in domain.items("mul", 100, 0, "train") if i.level == 2}
    path = write_jsonl(tmp_path / "plain.jsonl", [{"question": f"Why [{m}] {k}?", "answer": "because"}
                                                  for k in range(4) for m in IDS])  # fmt: skip
    plain = open_seed_domain(DomainConfig(name="seed", data_path=path, options={"scoring": "judge"}),
                             FakeTeacher(), tmp_path / "plain-taxonomy.yaml")  # fmt: skip
    assert {i.level for i in plain.items("add", 10, 0, "train")} == {2}  # the module's tier


def test_benchmark_items_are_labelled_without_teacher_calls(data_dir: Path, tmp_path: Path) -> None:
    teacher = FakeTeacher()
    dom = open_seed_domain(seed_config(data_dir), teacher, tmp_path / "t.yaml")
    calls = len(teacher.calls)
    labelled = {i.prompt: m.id for m in dom.modules() for i in dom.items(m.id, 100, 0, "benchmark")}
    assert len(teacher.calls) == calls
    assert labelled["A new question about [sub] and more"] == "sub"  # its words match sub's seeds best
    assert len(labelled) == 5


def test_a_module_without_items_is_not_served(data_dir: Path, tmp_path: Path) -> None:
    teacher = FakeTeacher(label=lambda text: "sub" if "[add]" in text else text.split("[")[1].split("]")[0])
    dom = open_seed_domain(seed_config(data_dir), teacher, tmp_path / "t.yaml")
    # Merging would leave 9 modules (minimum 10): add stays, flagged, with no items, and is never probed empty.
    assert "add" in dom.taxonomy.ids and "only 0 items" in dom.taxonomy.module("add").flag
    assert "add" not in [m.id for m in dom.modules()] and len(dom.modules()) == 9
    with pytest.raises(DomainError, match="unknown seed module 'add'"):
        dom.items("add", 1, 0)


# ------------------------------------------------------------------------------------- scoring


def test_numeric_scoring_uses_the_shared_checker(domain: SeedDataDomain) -> None:
    item = domain.items("add", 1, 0, "probe")[0]
    assert domain.check(item, f"so\n#### {item.answer}") and not domain.check(item, "#### 123456")
    assert "####" in domain.messages(item)[0]["content"]


@pytest.fixture
def code_domain(tmp_path: Path) -> SeedDataDomain:
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
    humaneval = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
    rows = [{"question": f"[{m}] Write add(a, b) returning a + b. Variant {k}.", "tests": tests, "entry_point": "add"}
            for k in range(3) for m in IDS]  # fmt: skip
    rows.append({"question": "def add(a, b):\n    \"\"\"Sum [add].\"\"\"\n", "tests": humaneval,
                 "entry_point": "add"})  # fmt: skip
    path = write_jsonl(tmp_path / "code.jsonl", rows)
    config = DomainConfig(name="seed", data_path=path, options={"scoring": "code", "min_items_per_module": 1})
    return open_seed_domain(config, FakeTeacher(), tmp_path / "code-taxonomy.yaml")


@pytest.mark.skipif(isolation_mode() == "unavailable", reason="no sandbox on this machine")
def test_code_scoring_runs_the_tests_in_the_sandbox(code_domain: SeedDataDomain) -> None:
    items = [i for s in ("probe", "gate", "train") for i in code_domain.items("add", 10, 0, s)]
    plain = next(i for i in items if "Variant" in i.prompt)
    right = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```"
    assert code_domain.check(plain, right)
    assert not code_domain.check(plain, "```python\ndef add(a, b):\n    return a - b\n```")
    stub = next(i for i in items if i.prompt.startswith("def add"))  # HumanEval shape: check(candidate), body only
    assert code_domain.check(stub, "    return a + b\n") and not code_domain.check(stub, "    return a * b\n")
    assert code_domain.max_tokens == 512 and "```python" in code_domain.messages(plain)[0]["content"]


def test_verdicts_are_parsed_and_repaired() -> None:
    assert parse_verdict('```json\n{"correct": true, "reason": "same"}\n```').correct
    assert not parse_verdict('Verdict: {"correct": "no", "reason": "differs",}').correct
    assert parse_verdict('{"correct": "yes"}').model_dump() == {"correct": True, "reason": ""}
    assert parse_verdict('{"correct": false, "reason": 3}').reason == "3"
    for bad in ('{"correct": "maybe"}', "I think it is right", '{"reason": "no verdict"}'):
        with pytest.raises(InvalidReply):
            parse_verdict(bad)


def test_judge_grades_with_rouge_beside_and_never_pays_twice() -> None:
    teacher = FakeTeacher(verdict=lambda user: json.dumps({"correct": "Paris" in user.split("STUDENT ANSWER")[1],
                                                           "reason": "r"}))  # fmt: skip
    judge = Judge(teacher)
    good = judge.grade("Capital of France?", "Paris", "It is Paris")
    bad = judge.grade("Capital of France?", "Paris", "Lyon")
    assert good.correct and not bad.correct and good.parsed
    assert good.rouge_l == pytest.approx(2 * 1 / (1 + 3)) and bad.rouge_l == 0.0
    assert judge.grade("Capital of France?", "Paris", "It is Paris") == good and teacher.count("verdict") == 2
    request = teacher.calls[0][1]
    assert "REFERENCE ANSWER:\nParis" in request.messages[-1][1] and "fair grader" in request.messages[0][1]


def test_an_unusable_verdict_is_retried_then_counted_as_wrong() -> None:
    teacher = FakeTeacher()
    teacher.replies["verdict"] = ["hmm", '{"correct": true}']
    assert Judge(teacher).grade("q", "a", "a").correct and teacher.count("verdict") == 2
    teacher = FakeTeacher(verdict=lambda user: "no idea")
    judge = Judge(teacher)
    grade = judge.grade("q", "a", "b")
    assert not grade.correct and not grade.parsed and judge.unparsed == 1 and "no_json" in grade.reason


def test_judge_scoring_in_the_domain_records_verdicts(tmp_path: Path) -> None:
    rows = [{"question": f"[{m}] Name a colour number {k}.", "answer": "blue"} for k in range(3) for m in IDS]
    path = write_jsonl(tmp_path / "free.jsonl", rows)
    config = DomainConfig(name="seed", data_path=path, options={"scoring": "judge", "min_items_per_module": 1})
    teacher = FakeTeacher(verdict=lambda user: json.dumps({"correct": "blue" in user.split("STUDENT ANSWER")[1]}))
    dom = open_seed_domain(config, teacher, tmp_path / "free-taxonomy.yaml")
    item = dom.items("add", 1, 0, "probe")[0]
    assert dom.check(item, "blue, of course") and not dom.check(item, "red")
    assert [(g["item_id"], g["correct"]) for g in dom.grades] == [(item.id, True), (item.id, False)]
    assert dom.grades[0]["rouge_l"] > 0 and dom.grades[1]["rouge_l"] == 0
    options = {**config.options, "taxonomy": str(tmp_path / "free-taxonomy.yaml")}
    ungraded = seed_domain_from_file(DomainConfig(name="seed", data_path=path, options=options))
    with pytest.raises(DomainError, match="has no grader"):
        ungraded.check(item, "blue")


# ------------------------------------------------------------------------------------- ioa diagnose


class Student:
    """Right on add and sub, wrong elsewhere (by the [module] tag in the prompt)."""

    name = "student"
    fingerprint = "student-fp"

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        out = []
        for r in requests:
            user = r.messages[-1][1]
            k = int(user.split()[1])
            right = "[add]" in user or "[sub]" in user
            out.append(Generation(f"#### {k if right else 99999}", 10, 3))
        return out


class SolvingTeacher(FakeTeacher):
    """The fake teacher, also answering probes right (their prompt starts "Problem k about")."""

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        probes = [r for r in requests if "math tutor" in r.messages[0][1]]
        if not probes:
            return super().generate(requests)
        assert len(probes) == len(requests)
        return [Generation(f"#### {int(r.messages[-1][1].split()[1])}", 10, 3) for r in requests]


def test_diagnose_builds_the_taxonomy_then_uses_a_user_edit_on_rerun(data_dir: Path, tmp_path: Path) -> None:
    config = RunConfig(name="seed-run", runs_dir=tmp_path / "runs", domain=seed_config(data_dir),
                       identifier={"probes_per_module": 5})  # fmt: skip
    run = RunDir(config.run_dir)
    teacher = SolvingTeacher()
    found = diagnose(config, run, teacher=teacher, student=Student())
    path = run / "taxonomy.yaml"
    tax = found.taxonomy
    assert tax is not None and tax["path"] == str(path) and tax["built"] and not tax["edited_by_user"]
    assert tax["modules"] == 10 and tax["assigned"] == tax["items"] == 79 and tax["fallbacks"] == 0
    assert [s.module for s in found.scores] == sorted(IDS)
    assert {s.module: s.student.value for s in found.scores}["add"] == 1.0
    assert {s.module: s.student.value for s in found.scores}["mul"] == 0.0
    assert Edge("add", "sub", "proposed") in found.edges  # the teacher's prerequisites are in the graph
    assert json.loads((run / "diagnosis" / "taxonomy.json").read_text())["modules"] == 10
    assert teacher.kinds() == {"hierarchy": 1, "labels": 8, "prerequisites": 1}

    # The user renames rates → speed and moves every mul item into add: the rerun uses the edit, classifies
    # nothing, and probes what the edited taxonomy says.
    text = path.read_text().replace("- id: rates\n", "- id: speed\n").replace(": rates  #", ": speed  #")
    path.write_text(text.replace(": mul  #", ": add  #"))
    again = SolvingTeacher()
    found = diagnose(config, run, teacher=again, student=Student())
    assert again.kinds() == {}  # no hierarchy, labels or prerequisites asked (probes are not counted kinds)
    scores = {s.module: s for s in found.scores}
    assert "speed" in scores and "rates" not in scores and "mul" not in scores
    assert scores["add"].student.n == 2  # 15 items now: two probes, where the 8 before gave one
    assert found.taxonomy is not None and found.taxonomy["edited_by_user"] and not found.taxonomy["built"]
    assert read_taxonomy(path).edited


def test_ioa_diagnose_prints_the_taxonomy_and_the_per_module_table(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import ioa.diagnosis
    from ioa import ui
    from ioa.cli import app

    monkeypatch.setattr(ioa.diagnosis, "open_teacher", lambda config, run, cache: SolvingTeacher())
    monkeypatch.setattr(ioa.diagnosis, "load_cached", lambda spec, cache, n_ctx: Student())
    monkeypatch.setattr(ui.console, "width", 400)
    config = tmp_path / "seed.yaml"
    config.write_text(json.dumps({"name": "cli-seed", "runs_dir": str(tmp_path / "runs"),
                                  "domain": seed_config(data_dir).model_dump(mode="json"),
                                  "identifier": {"probes_per_module": 5}}))  # fmt: skip
    result = CliRunner().invoke(app, ["diagnose", str(config)])
    assert result.exit_code == 0, result.output
    path = tmp_path / "runs" / "cli-seed" / "taxonomy.yaml"
    line = f"taxonomy: {path} (built by the teacher): 10 modules in 4 categories, 79 of 79 items assigned"
    assert line in result.output
    assert "Taxonomy (teacher-built" in result.output and "Diagnosis: smollm2-135m" in result.output
    for module in IDS:  # both tables name every module
        assert result.output.count(f" {module} ") >= 2, module


REAL_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gsm8k"


@pytest.mark.skipif(not (REAL_DATA / "train.jsonl").is_file(), reason="GSM8K data not present")
def test_the_gsm8k_seed_preset_loads_300_seeds_disjoint_from_the_benchmark() -> None:
    from ioa.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "src" / "ioa" / "presets" / "gsm8k_seed.yaml")
    assert config.domain.name == "seed" and config.domain.options["max_seed_items"] == 300
    domain = config.domain.model_copy(update={"data_path": REAL_DATA})
    data = load_seed_data(domain)
    assert len(data.seeds) == 300 and len(data.benchmark) == 1319
    assert all(r.steps is not None and r.answer for r in data.seeds)  # GSM8K shape: final answer and steps
    test_prompts = {" ".join(r.prompt.split()) for r in data.benchmark}
    assert not any(" ".join(r.prompt.split()) in test_prompts for r in data.seeds)
    assert [r.id for r in data.benchmark][:2] == ["test-1", "test-2"]


def test_ioa_diagnose_reports_seed_data_problems_before_loading_any_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from ioa import ui
    from ioa.cli import app

    monkeypatch.setenv("IOA_HOME", str(tmp_path / "home"))  # no models installed: loading one would fail first
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ui.console, "width", 400)
    result = CliRunner().invoke(app, ["diagnose", "--domain", "seed", "--data-path", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().startswith(f"error: seed file {tmp_path / 'none.jsonl'} does not exist — ")
