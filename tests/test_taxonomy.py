"""The teacher-built taxonomy: hierarchy validation and repair, classification with fallback, small-module
merges, proposed edges, taxonomy.yaml round trip, user edits respected on rerun, clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ioa.adapter import InvalidReply
from ioa.errors import TeacherReplyError
from ioa.graph import Edge
from ioa.taxonomy import (
    ATTEMPTS,
    Taxonomy,
    TaxonomyError,
    TaxonomyModule,
    TaxonomySettings,
    classify_items,
    closest_module,
    ensure_taxonomy,
    merge_small_modules,
    nearest_modules,
    parse_hierarchy,
    parse_labels,
    propose_edges,
    propose_modules,
    read_taxonomy,
    write_taxonomy,
)
from seed_support import MODULES, FakeTeacher, hierarchy_reply, items_for

IDS = [m[1] for m in MODULES]


def taxonomy(modules: list[tuple[str, str, str, str]] = MODULES) -> Taxonomy:
    return parse_hierarchy(hierarchy_reply(modules), 1, 100)


# ------------------------------------------------------------------------------------- hierarchy


def test_hierarchy_is_parsed_into_categories_and_modules() -> None:
    tax = parse_hierarchy(hierarchy_reply(), 10, 40)
    assert tax.ids == IDS
    assert tax.categories == {"arithmetic": "Arithmetic", "money": "Money", "time": "Time", "geometry": "Geometry"}
    assert tax.module("area").category == "geometry" and tax.module("area").tier == 2
    assert tax.module("change").description == "money given back after paying"


def test_hierarchy_repairs_fences_prose_trailing_commas_ids_and_tiers() -> None:
    reply = (
        "Here is my proposal:\n```json\n"
        '{"categories": [{"title": "Number Sense", "modules": ['
        '{"id": "Place Value", "title": "Place value", "tier": 9},'
        '{"title": "Fractions & Ratios", "description": "parts of a whole", "tier": 0},'
        '{"id": "Money", "tier": "tier 2"},'
        '{"id": "Time", "tier": "hard"},'
        '{"id": "3d shapes", "tier": 3},]}]}\n```\nHope this helps!'
    )
    tax = parse_hierarchy(reply, 3, 40)
    assert tax.ids == ["place_value", "fractions_ratios", "money", "time", "m_3d_shapes"]
    assert [m.tier for m in tax.modules] == [5, 1, 2, 1, 3]  # clamped to 1..5, read from text, else 1
    assert list(tax.categories) == ["number_sense"]
    assert tax.module("m_3d_shapes").title == "m 3d shapes"


def test_hierarchy_accepts_a_flat_module_list_grouped_by_category() -> None:
    flat = {"modules": [{"id": f"m{i}", "category": "Word Problems" if i % 2 else "Basics"} for i in range(10)]}
    tax = parse_hierarchy(json.dumps(flat), 10, 40)
    assert len(tax.modules) == 10 and set(tax.categories) == {"word_problems", "basics"}


@pytest.mark.parametrize(
    ("n", "reason"), [(9, "9 modules, need 10 to 40"), (41, "41 modules, need 10 to 40")], ids=["few", "many"]
)
def test_hierarchy_outside_10_to_40_modules_is_invalid(n: int, reason: str) -> None:
    modules = [("c", f"skill_{i}", f"Skill {i}", "") for i in range(n)]
    with pytest.raises(InvalidReply) as exc:
        parse_hierarchy(hierarchy_reply(modules), 10, 40)
    assert exc.value.reason == reason


def test_hierarchy_with_duplicate_ids_is_invalid_even_after_snake_casing() -> None:
    modules = [*MODULES, ("other", "Add", "Adding again", "")]
    with pytest.raises(InvalidReply, match="duplicate module ids add"):
        parse_hierarchy(hierarchy_reply(modules), 10, 40)


@pytest.mark.parametrize("reply", ["no json here", '{"categories": "many"}', '{"categories": [', '{"other": 1}'])
def test_hierarchy_that_is_not_one_is_invalid(reply: str) -> None:
    with pytest.raises(InvalidReply):
        parse_hierarchy(reply, 10, 40)


def test_propose_modules_retries_a_malformed_reply_with_the_problem_named() -> None:
    teacher = FakeTeacher()
    teacher.replies["hierarchy"] = ["Sorry, I cannot.", hierarchy_reply(MODULES[:5])]  # unusable, then too few
    tax = propose_modules(teacher, ["a problem"], 10, 40)
    assert tax.ids == IDS  # the third (default) reply
    calls = [r for k, r in teacher.calls if k == "hierarchy"]
    assert [r.params.temperature for r in calls] == [0.0, 0.7, 0.7]
    assert "could not be used (it held no JSON object)" in calls[1].messages[-1][1]
    assert "could not be used (5 modules, need 10 to 40)" in calls[2].messages[-1][1]
    assert calls[0].response_format is not None  # structured output asked for where the backend can


def test_propose_modules_raises_after_the_retries() -> None:
    teacher = FakeTeacher()
    teacher.replies["hierarchy"] = ["{broken"] * ATTEMPTS
    with pytest.raises(TeacherReplyError, match=r"hierarchy in 3 tries \(last: its JSON was malformed\)"):
        propose_modules(teacher, ["a problem"], 10, 40)
    assert teacher.count("hierarchy") == ATTEMPTS


# ------------------------------------------------------------------------------------- classification


def test_every_item_gets_one_module_in_batches() -> None:
    teacher, tax = FakeTeacher(), taxonomy()
    items = items_for(IDS, 3)  # 30 items
    result = classify_items(teacher, tax, items, batch_size=10)
    assert teacher.count("labels") == 3  # 10 items per prompt
    assert tax.assignments == {i: re.search(r"\[(\w+)\]", t).group(1) for i, t in items.items()}
    assert (result.labelled, result.retried, result.fallback) == (30, 0, 0)
    assert tax.fallbacks == [] and tax.notes == []


def test_mislabelled_items_are_retried_alone_then_fall_back_by_rouge_l() -> None:
    items = {
        "a": "two apples and three apples",
        "b": "area of rectangles and squares with sides 3 and 4",  # wrong twice → closest by ROUGE-L
        "c": "walk around the field",  # labelled by title: repaired
        "d": "how much change after paying",  # wrong in the batch, right alone
    }
    teacher, tax = FakeTeacher(), taxonomy()
    teacher.replies["labels"] = [
        json.dumps({"labels": {"1": "add", "2": "bogus", "3": "Perimeter", "4": "nonsense"}}),
        json.dumps({"labels": {"1": "still bogus"}}),  # b alone
        json.dumps({"labels": {"1": "change"}}),  # d alone
    ]
    result = classify_items(teacher, tax, items, batch_size=10)
    retries = [r.messages[-1][1] for k, r in teacher.calls if k == "labels"][1:]
    assert retries == ["1. " + items["b"], "1. " + items["d"]]  # one retry each, alone
    assert tax.assignments == {"a": "add", "b": "area", "c": "perimeter", "d": "change"}
    assert closest_module(items["b"], tax) == "area"
    assert (result.labelled, result.retried, result.fallback) == (2, 1, 1)
    assert tax.fallbacks == ["b"]
    assert tax.notes == ["1 of 4 items had no valid label from the teacher after a retry; each went to the module "
                         "closest by ROUGE-L (listed under fallback_items)"]  # fmt: skip


def test_a_batch_with_no_usable_reply_is_classified_item_by_item() -> None:
    teacher, tax = FakeTeacher(), taxonomy()
    items = items_for(IDS[:3], 2)
    teacher.replies["labels"] = ["I think they are all additions."]
    result = classify_items(teacher, tax, items, batch_size=10)
    assert teacher.count("labels") == 1 + 6
    assert set(tax.assignments.values()) == {"add", "sub", "mul"} and len(tax.assignments) == 6
    assert (result.labelled, result.retried, result.fallback) == (0, 6, 0)


def test_labels_are_repaired_from_titles_annotations_and_numbered_keys() -> None:
    tax = taxonomy()
    reply = json.dumps({"labels": {"Problem 1": "Multiplication", "#2": "div: Division", "3.": "area (Area)",
                                   "4": "Clock Time", "5": "rates - speed", "6": "geometry"}})  # fmt: skip
    assert parse_labels(reply, 7, tax) == ["mul", "div", "area", "clocks", "rates", None, None]


def test_labels_as_a_list_in_item_order_are_accepted() -> None:
    teacher, tax = FakeTeacher(), taxonomy()
    teacher.replies["labels"] = ['{"labels": ["div", "mul"]}']
    classify_items(teacher, tax, {"x": "one", "y": "two"}, batch_size=10)
    assert tax.assignments == {"x": "div", "y": "mul"}


# ------------------------------------------------------------------------------------- small modules


def _assign(tax: Taxonomy, counts: dict[str, int]) -> None:
    tax.assignments = {f"{m}-{k}": m for m, n in counts.items() for k in range(n)}


def test_a_small_module_merges_into_its_categorys_largest_sibling() -> None:
    tax = taxonomy()
    tax.module("div").prerequisites = ["mul"]
    tax.module("area").prerequisites = ["div", "perimeter"]
    _assign(tax, {"add": 9, "sub": 6, "mul": 12, "div": 2, "prices": 6, "change": 6, "clocks": 6, "rates": 6,
                  "area": 6, "perimeter": 6})  # fmt: skip
    done = merge_small_modules(tax, min_items=5)
    assert done == ["merged div (2 items) into mul: fewer than 5 items"]
    assert "div" not in tax.ids and tax.counts()["mul"] == 14
    assert tax.module("mul").prerequisites == []  # div's prerequisite was mul itself: no self-loop
    assert tax.module("area").prerequisites == ["mul", "perimeter"]  # redirected
    assert tax.notes == done


def test_a_small_module_without_a_sibling_is_flagged_not_merged() -> None:
    tax = taxonomy([*MODULES, ("probability", "chance", "Chance", "likely outcomes")])
    _assign(tax, {**{m: 6 for m in IDS}, "chance": 1})
    done = merge_small_modules(tax, min_items=5)
    assert "chance" in tax.ids and tax.module("chance").flag.startswith("only 1 items (fewer than 5)")
    assert done == [f"flagged chance: {tax.module('chance').flag}"]
    assert tax.counts()["chance"] == 1


def test_merging_stops_at_the_minimum_number_of_modules() -> None:
    tax = taxonomy()
    _assign(tax, {**{m: 6 for m in IDS}, "div": 1, "rates": 2})
    merge_small_modules(tax, min_items=5, n_min=9)
    assert len(tax.ids) == 9 and "div" not in tax.ids  # the smallest merged first
    assert "merging would leave fewer than 9" in tax.module("rates").flag


def test_merging_small_modules_cascades_and_keeps_every_item() -> None:
    tax = taxonomy()
    _assign(tax, {"add": 1, "sub": 1, "mul": 2, "div": 0, **{m: 6 for m in IDS[4:]}})
    before = set(tax.assignments)
    merge_small_modules(tax, min_items=3)
    assert set(tax.assignments) == before and set(tax.assignments.values()) <= set(tax.ids)
    arithmetic = [m for m in tax.modules if m.category == "arithmetic"]
    assert len(arithmetic) == 1 and tax.counts()[arithmetic[0].id] == 4


# ------------------------------------------------------------------------------------- edges


def test_proposed_edges_drop_unknown_ids_and_self_loops() -> None:
    teacher = FakeTeacher(prerequisites={"sub": ["add", "sub", "algebra"], "Change": "Subtraction", "ghost": ["add"]})
    tax = taxonomy()
    edges = propose_edges(teacher, tax)
    assert edges == [Edge("add", "sub", "proposed"), Edge("sub", "change", "proposed")]
    assert tax.module("sub").prerequisites == ["add"] and tax.module("add").prerequisites == []
    assert tax.notes == ["dropped 3 proposed prerequisite(s) naming an unknown module or itself"]


def test_proposed_edges_accept_a_list_shape_and_keep_cycles_for_the_graph_code() -> None:
    teacher = FakeTeacher()
    teacher.replies["prerequisites"] = [json.dumps({"prerequisites": [{"module": "add", "prerequisites": ["sub"]},
                                                                      {"module": "sub", "prerequisites": ["add"]}]})]
    edges = propose_edges(teacher, taxonomy())
    assert set(edges) == {Edge("sub", "add", "proposed"), Edge("add", "sub", "proposed")}


def test_no_usable_edges_leave_none_and_say_so() -> None:
    teacher = FakeTeacher()
    teacher.replies["prerequisites"] = ["nope"] * ATTEMPTS
    tax = taxonomy()
    assert propose_edges(teacher, tax) == []
    assert teacher.count("prerequisites") == ATTEMPTS and "no usable prerequisites" in tax.notes[-1]


# ------------------------------------------------------------------------------------- benchmark labels


def test_nearest_modules_vote_by_word_overlap() -> None:
    examples = [("apples and pears in a basket", "fruit"), ("bananas with apples", "fruit"),
                ("trains leave the station at noon", "travel"), ("the bus station at night", "travel")]  # fmt: skip
    found = nearest_modules({"q1": "pears and bananas", "q2": "a train to the station", "q3": "zzz"}, examples)
    assert found == {"q1": "fruit", "q2": "travel", "q3": "fruit"}  # no shared word: the most common module


# ------------------------------------------------------------------------------------- taxonomy.yaml


def test_yaml_round_trip_keeps_everything_that_matters(tmp_path: Path) -> None:
    tax = taxonomy()
    tax.module("sub").prerequisites = ["add"]
    tax.assignments = {"train-1": "add", "yes": "sub", "17": "area"}  # keys YAML would misread are quoted
    tax.fallbacks, tax.notes = ["17"], ["merged x into y"]
    path = tmp_path / "taxonomy.yaml"
    write_taxonomy(path, tax, {"train-1": "Two apples\nand three", "yes": "y", "17": "z"}, "in123", "train.jsonl")
    text = path.read_text()
    assert text.startswith("# ioa taxonomy of train.jsonl") and "You may edit this file" in text
    assert "  train-1: add  # Two apples and three\n" in text and "prerequisites: [add]" in text
    loaded = read_taxonomy(path)
    assert not loaded.edited and loaded.inputs == "in123"
    got = loaded.taxonomy
    assert got.ids == tax.ids and got.categories == tax.categories and got.assignments == tax.assignments
    assert got.edges() == tax.edges() and got.fallbacks == ["17"] and got.notes == ["merged x into y"]
    assert [(m.title, m.description, m.tier) for m in got.modules] == [(m.title, m.description, m.tier)
                                                                       for m in tax.modules]  # fmt: skip


def test_any_change_to_the_body_counts_as_a_user_edit(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.yaml"
    write_taxonomy(path, taxonomy(), {}, "in", "s")
    path.write_text(path.read_text().replace("title: Addition", "title: Adding up"))
    loaded = read_taxonomy(path)
    assert loaded.edited and loaded.taxonomy.module("add").title == "Adding up"
    path.write_text("\n".join(line for line in path.read_text().splitlines() if "ioa-state" not in line))
    assert read_taxonomy(path).edited  # without the state line there is nothing to trust


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("  - id: sub\n", "  - id: sub: x\n"), r"taxonomy.yaml line \d+: not valid YAML"),
        (lambda t: t.replace("  - id: sub\n", "  - id: add\n"), r"line \d+: module id 'add' appears twice"),
        (lambda t: t.replace("seed-3: ", "seed-3: ghost  #"), r"line \d+: item seed-3 is assigned to unknown module"),
        (lambda t: t.replace("prerequisites: [add]", "prerequisites: [algebra]"),
         r"line \d+: module 'sub' lists unknown prerequisite\(s\) algebra"),
        (lambda t: t.replace("  - id: mul\n", "  - id: Mul Tables\n"), r"module id 'Mul Tables' is not snake_case"),
        (lambda t: t.replace("tier: 2", "tier: 7", 1), r"module 'add' has tier 7"),
        (lambda t: "- just\n- a list\n", r"no `categories` list"),
    ],
    ids=["syntax", "duplicate", "unknown-module", "unknown-prereq", "not-snake", "tier", "layout"],
)
def test_a_broken_file_is_one_clear_error_naming_the_file_and_line(tmp_path: Path, edit, message: str) -> None:
    tax = taxonomy()
    tax.module("sub").prerequisites = ["add"]
    tax.assignments = {f"seed-{k}": "add" for k in range(5)}
    path = tmp_path / "taxonomy.yaml"
    write_taxonomy(path, tax, {}, "in", "s")
    path.write_text(edit(path.read_text()))
    with pytest.raises(TaxonomyError, match=message) as exc:
        read_taxonomy(path)
    assert str(path) in str(exc.value) and exc.value.fix


def test_the_duplicate_error_points_at_the_second_definition(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.yaml"
    write_taxonomy(path, taxonomy(), {}, "in", "s")
    text = path.read_text().replace("  - id: sub\n", "  - id: add\n")
    path.write_text(text)
    second = [n for n, line in enumerate(text.splitlines(), 1) if line == "  - id: add"][1]
    with pytest.raises(TaxonomyError, match=f"line {second}:"):
        read_taxonomy(path)


# ------------------------------------------------------------------------------------- build and rerun

SETTINGS = TaxonomySettings(n_min=10, n_max=40, min_items=3, sample_size=8, batch_size=10)


def test_first_build_proposes_classifies_merges_proposes_edges_and_writes(tmp_path: Path) -> None:
    teacher = FakeTeacher()
    items = {**items_for(IDS[:9], 4), "lonely-1": "[perimeter] fence", "lonely-2": "[perimeter] walk round"}
    path = tmp_path / "run" / "taxonomy.yaml"
    settings = TaxonomySettings(n_min=9, n_max=40, min_items=3, sample_size=8, batch_size=10)
    build = ensure_taxonomy(teacher, items, path, settings, "train.jsonl")
    assert build.built and not build.edited and build.classified == 38 and build.fallbacks == 0
    assert teacher.kinds() == {"hierarchy": 1, "labels": 4, "prerequisites": 1}
    tax = build.taxonomy
    assert "perimeter" not in tax.ids and tax.counts()["area"] == 6  # 2 items < 3: merged into its sibling
    assert set(tax.assignments) == set(items) and set(tax.assignments.values()) <= set(tax.ids)
    assert tax.edges() == [Edge("add", "sub", "proposed"), Edge("sub", "change", "proposed")]
    assert read_taxonomy(path).taxonomy.assignments == tax.assignments


def test_rerun_of_an_unedited_file_calls_no_teacher(tmp_path: Path) -> None:
    items, path = items_for(IDS, 3), tmp_path / "taxonomy.yaml"
    ensure_taxonomy(FakeTeacher(), items, path, SETTINGS)
    again = FakeTeacher()
    build = ensure_taxonomy(again, items, path, SETTINGS)
    assert again.calls == [] and not build.built and not build.edited and build.classified == 0


def test_an_unedited_file_from_other_inputs_is_rebuilt(tmp_path: Path) -> None:
    items, path = items_for(IDS, 3), tmp_path / "taxonomy.yaml"
    ensure_taxonomy(FakeTeacher(), items, path, SETTINGS)
    other = FakeTeacher(fingerprint="another-teacher")
    build = ensure_taxonomy(other, items, path, SETTINGS)
    assert build.built and other.count("hierarchy") == 1


def test_user_edits_are_used_as_they_are_and_only_unassigned_items_are_classified(tmp_path: Path) -> None:
    items, path = items_for(IDS, 3), tmp_path / "taxonomy.yaml"
    ensure_taxonomy(FakeTeacher(), items, path, SETTINGS)
    text = path.read_text()
    moved = next(i for i, t in items.items() if "[add]" in t)
    dropped = next(i for i, t in items.items() if "[mul]" in t)
    text = (text.replace("- id: rates\n", "- id: speed\n")  # a renamed module (its items moved with it)
                .replace(": rates  #", ": speed  #")
                .replace(f"  {moved}: add  #", f"  {moved}: sub  #")  # a moved item
                .replace("prerequisites: [add]", "prerequisites: [mul]")  # an edited edge
                .replace("  - id: perimeter\n", "  - id: volume\n    title: Volume\n    tier: 4\n"
                                                "  - id: perimeter\n"))  # a new module  # fmt: skip
    text = "\n".join(line for line in text.splitlines() if not line.startswith(f"  {dropped}:")) + "\n"
    path.write_text(text)

    teacher = FakeTeacher(label=lambda t: "volume")  # classifies only the item whose line was deleted
    build = ensure_taxonomy(teacher, items, path, SETTINGS)
    tax = build.taxonomy
    assert build.edited and not build.built and build.classified == 1
    assert teacher.kinds() == {"labels": 1}
    assert numbered_items(teacher) == [items[dropped]]
    assert "speed" in tax.ids and "rates" not in tax.ids and tax.counts()["speed"] == 3
    assert tax.assignments[moved] == "sub" and tax.assignments[dropped] == "volume"
    assert tax.module("volume").tier == 4 and tax.module("sub").prerequisites == ["mul"]
    assert tax.module("speed").category == "time"

    # The file now holds the new assignment, stays marked as edited, and a third run calls no teacher.
    loaded = read_taxonomy(path)
    assert loaded.edited and loaded.taxonomy.assignments[dropped] == "volume"
    quiet = FakeTeacher(fingerprint="another-teacher")  # other inputs: still no rebuild of the user's file
    assert ensure_taxonomy(quiet, items, path, SETTINGS).taxonomy.assignments == tax.assignments
    assert quiet.calls == []


def numbered_items(teacher: FakeTeacher) -> list[str]:
    return [line.split(". ", 1)[1] for _, r in teacher.calls for line in r.messages[-1][1].split("\n\n")]


def test_an_edited_file_flags_small_modules_but_never_merges_them(tmp_path: Path) -> None:
    items, path = items_for(IDS, 3), tmp_path / "taxonomy.yaml"
    ensure_taxonomy(FakeTeacher(), items, path, SETTINGS)
    two = [i for i, t in items.items() if "[div]" in t][:2]
    text = path.read_text()
    for i in two:
        text = text.replace(f"  {i}: div  #", f"  {i}: mul  #")
    path.write_text(text)
    tax = ensure_taxonomy(FakeTeacher(), items, path, SETTINGS).taxonomy
    assert "div" in tax.ids and tax.counts()["div"] == 1 and "fewer than 3" in tax.module("div").flag


def test_new_items_alone_are_classified_into_an_existing_taxonomy(tmp_path: Path) -> None:
    items, path = items_for(IDS, 3), tmp_path / "taxonomy.yaml"
    ensure_taxonomy(FakeTeacher(), items, path, SETTINGS)
    path.write_text(path.read_text().replace("title: Addition", "title: Sums"))  # a user edit: kept
    more = {**items, **items_for(["area"], 2, start=100)}
    teacher = FakeTeacher()
    build = ensure_taxonomy(teacher, more, path, SETTINGS)
    assert build.classified == 2 and teacher.kinds() == {"labels": 1}
    assert build.taxonomy.module("add").title == "Sums" and set(build.taxonomy.assignments) == set(more)


def test_no_items_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match="no seed items"):
        ensure_taxonomy(FakeTeacher(), {}, tmp_path / "t.yaml", SETTINGS)


def test_a_module_dataclass_edge_ignores_unknown_and_self_prerequisites() -> None:
    tax = Taxonomy({"c": "C"}, [TaxonomyModule("a", "A", "c", prerequisites=["a", "b"]), TaxonomyModule("b", "B", "c")])
    assert tax.edges() == [Edge("b", "a", "proposed")]
