"""The GSM8K domain: parsing, errors that name the file and line, tagging, levels, disjoint splits."""

from __future__ import annotations

import json
from graphlib import TopologicalSorter
from pathlib import Path

import pytest

from ioa.config import DomainConfig
from ioa.domains import Domain, GSM8KDomain, get_domain
from ioa.domains.gsm8k import count_steps, level_of, load_jsonl, split_of, tag_question
from ioa.errors import DataError, DomainError

REAL_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gsm8k"
needs_real_data = pytest.mark.skipif(not (REAL_DATA / "train.jsonl").is_file(), reason="GSM8K data not present")

TRAIN_ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
    },
    {
        "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
        "How much did she earn?",
        "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
        "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
    },
    {
        "question": "A shop sold 1200 toys. 25% of them were robots. How many robots did the shop sell?",
        "answer": "25% of 1200 is 1200*0.25 = <<1200*0.25=300>>300.\n#### 300",
    },
    {
        "question": "Tom has 3 boxes of 250 pens and buys 5 more boxes. He gives away 10 pens and then "
        "packs the rest into bags of 10. Then he sells each bag. How many bags does he have?",
        "answer": "3 boxes + 5 boxes = <<3+5=8>>8 boxes.\n8 * 250 = <<8*250=2000>>2000 pens.\n"
        "2000 - 10 = <<2000-10=1990>>1990 pens.\n1990 / 10 = <<1990/10=199>>199 bags.\n"
        "He keeps them all.\n#### 1,990",
    },
]
TEST_ROWS = [
    {
        "question": "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total?",
        "answer": "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total is 2+1=<<2+1=3>>3 bolts\n#### 3",
    }
]


def write_jsonl(path: Path, rows: list[dict[str, str]], extra_lines: tuple[str, ...] = ()) -> None:
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", TRAIN_ROWS)
    write_jsonl(folder / "test.jsonl", TEST_ROWS)
    return folder


# --- parsing ------------------------------------------------------------------------------------------


def test_parses_answer_solution_level_and_module(data_dir: Path) -> None:
    records = load_jsonl(data_dir / "train.jsonl")
    assert [r.answer for r in records] == ["72", "10", "300", "1990"]  # "1,990" loses its comma
    first = records[0]
    assert "<<" not in first.solution and ">>" not in first.solution
    assert first.solution == (
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"
    )
    assert (first.source, first.line) == ("train.jsonl", 1)
    assert [r.level for r in records] == [1, 1, 1, 4]  # 2, 2, 1 and 5 steps
    assert [r.module for r in records] == ["fractions_ratios", "time_rates", "percentages", "money"]  # "buys", "sells"


def test_step_count_and_level_mapping() -> None:
    assert count_steps("a = <<1+1=2>>2\nb = <<2+2=4>>4\n#### 4") == 2
    assert count_steps("one long line <<1+1=2>>2 then <<2*3=6>>6 and <<6-1=5>>5\n#### 5") == 3
    assert count_steps("#### 5") == 1
    assert [level_of(s) for s in range(1, 10)] == [1, 1, 2, 3, 4, 5, 5, 5, 5]


@pytest.mark.parametrize(
    ("question", "module"),
    [
        ("A coat costs $80 and is 20% off. What does it cost now?", "percentages"),
        ("Ann has twice as many stickers as Bo, who has 7. How many do they have?", "fractions_ratios"),
        ("A rectangle is 4 feet wide and 9 feet long. What is its area?", "measurement_geometry"),
        ("A car drives 60 miles per hour for 3 hours. How far does it go?", "time_rates"),
        ("Pens cost $2 each. How much do 6 pens cost?", "money"),
        ("Sam has 5 apples and picks 7 more, then eats 2. How many are left?", "multi_step_arithmetic"),
    ],
)
def test_keyword_tagging(question: str, module: str) -> None:
    assert tag_question(question) == module


# --- errors -------------------------------------------------------------------------------------------


def test_missing_folder_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DomainError, match=r"nowhere does not exist.*domain\.data_path"):
        GSM8KDomain(missing)


def test_missing_file_names_the_file(data_dir: Path) -> None:
    (data_dir / "test.jsonl").unlink()
    with pytest.raises(DomainError, match=r"test\.jsonl is missing"):
        GSM8KDomain(data_dir)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"question": "Q?", "answer": "no final line"', "line 6 is not valid JSON"),
        ('["a list"]', "line 6 is not a JSON object"),
        ('{"answer": "#### 3"}', "line 6 has no text in 'question'"),
        ('{"question": "Q?", "answer": "3 apples"}', "line 6 has no final '#### <answer>'"),
        ('{"question": "Q?", "answer": "so ####  "}', "line 6 has an empty final answer"),
    ],
)
def test_malformed_line_names_file_and_line(data_dir: Path, bad_line: str, message: str) -> None:
    # Line 5 is blank (skipped, still counted), line 6 is the bad one.
    write_jsonl(data_dir / "train.jsonl", TRAIN_ROWS, ("", bad_line))
    domain = GSM8KDomain(data_dir)  # the folder is fine; files are parsed on first use
    with pytest.raises(DataError, match=rf"train\.jsonl {message}") as info:
        domain.items("money", 5, seed=0)
    assert info.value.fix  # every error says how to fix it


def test_default_path_is_relative_to_the_working_directory(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "project" / "main"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    with pytest.raises(DomainError, match=r"shared/data/gsm8k does not exist"):
        get_domain(DomainConfig(name="gsm8k"))
    shared = tmp_path / "project" / "shared" / "data"
    shared.mkdir(parents=True)
    data_dir.rename(shared / "gsm8k")
    assert get_domain(DomainConfig(name="gsm8k")).items("percentages", 5, seed=0, split="benchmark") == []


# --- the domain ---------------------------------------------------------------------------------------


def test_modules_are_a_dag_of_known_ids(data_dir: Path) -> None:
    domain = GSM8KDomain(data_dir)
    assert isinstance(domain, Domain)
    modules = {m.id: m for m in domain.modules()}
    assert 5 <= len(modules) <= 8
    for m in modules.values():
        assert set(m.prerequisites) <= set(modules)
        assert all(modules[p].tier < m.tier for p in m.prerequisites)
    assert len(list(TopologicalSorter({k: set(m.prerequisites) for k, m in modules.items()}).static_order())) == 6


def test_items_benchmark_is_test_and_check_is_robust(data_dir: Path) -> None:
    domain = get_domain(DomainConfig(name="gsm8k", data_path=data_dir))
    (item,) = domain.items("fractions_ratios", 10, seed=0, split="benchmark")
    assert item.id == "gsm8k-test-1" and item.answer == "3" and item.meta["source"] == "test.jsonl"
    assert domain.check(item, "So she needs 3 bolts.\n\\boxed{3}")
    assert domain.check(item, item.solution)
    assert not domain.check(item, "#### 4")
    messages = domain.messages(item)
    assert messages[-1] == {"role": "user", "content": item.prompt} and "####" in messages[0]["content"]


def test_training_side_splits_come_from_train_by_a_fixed_partition(data_dir: Path) -> None:
    domain = GSM8KDomain(data_dir)
    for row in TRAIN_ROWS:
        module = tag_question(row["question"])
        split = split_of(row["question"])
        for s in ("probe", "gate", "train"):
            found = [i.prompt for i in domain.items(module, 10, seed=5, split=s)]
            assert (row["question"] in found) == (s == split)


@needs_real_data
def test_real_data_splits_are_disjoint_deterministic_and_spread() -> None:
    domain = GSM8KDomain(REAL_DATA)
    seen: dict[str, set[str]] = {}
    for split in ("probe", "gate", "train", "benchmark"):
        prompts: set[str] = set()
        for module in domain.modules():
            items = domain.items(module.id, 60, seed=0, split=split)
            assert len(items) == 60, (module.id, split)
            assert len({i.prompt for i in items}) == 60
            assert all(i.module == module.id for i in items)
            prompts |= {i.prompt for i in items}
            if split != "benchmark":
                assert all(i.meta["source"] == "train.jsonl" for i in items)
        seen[split] = prompts
    splits = list(seen)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            assert not seen[a] & seen[b], (a, b)

    again = domain.items("money", 30, seed=0, split="probe")
    assert again == domain.items("money", 30, seed=0, split="probe")
    other = domain.items("money", 30, seed=1, split="probe")
    assert {i.id for i in again} != {i.id for i in other}

    spread = domain.items("multi_step_arithmetic", 50, seed=0, split="gate")
    assert [sum(i.level == lv for i in spread) for lv in range(1, 6)] == [10] * 5
    assert {i.level for i in domain.items("percentages", 10, seed=0, split="probe", level=4)} == {4}


@needs_real_data
def test_real_reference_solutions_pass_the_checker() -> None:
    domain = GSM8KDomain(REAL_DATA)
    for module in domain.modules():
        for item in domain.items(module.id, 40, seed=0, split="benchmark"):
            assert domain.check(item, item.solution), item.id
