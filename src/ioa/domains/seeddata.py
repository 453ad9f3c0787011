"""Seed data as a domain (DESIGN §2.1): the user's own tasks, organised by a teacher-built taxonomy.

**Input.** A JSONL file, one task per line: a prompt and a reference answer, or tests. `domain.data_path` is
the file, or a folder holding it (`options.seeds`, default train.jsonl). Field names and scoring are
`domain.options` (`SeedOptions`). `max_seed_items` keeps a fixed subset of the seeds (the first N in a hash
order of their prompts, so a larger N only adds items): the teacher classifies only those, which is what makes
a CPU run affordable.

**Modules** come from the taxonomy (ioa.taxonomy): built by the teacher on first use and kept as an editable
`taxonomy.yaml` (runs/NAME/taxonomy.yaml, or `options.taxonomy`). A module without seed items is left out.
Its prerequisites are offered to the graph as "proposed" edges (`proposed_edges`), not declared ones.

**Splits.** Within each module (stratified), a fixed seeded shuffle (`split_seed`, independent of the seed
of any `items` call) puts `probe_share` (10%) of its items in probe, `gate_share` (10%) in gate, the rest
(80%) in train: DESIGN's 80/20 split of seeds and probes, with the measuring 20% halved so that the mastery
gate never reuses the diagnosis probes and no two splits share an item. A module of one item only probes;
of two, one probe and one train item; from three on, at least one of each. `benchmark` is the separate
benchmark file (`options.benchmark`; GSM8K: test.jsonl), and a seed whose prompt is also a benchmark prompt
is dropped. Benchmark items are labelled without teacher calls (the similarity vote of the most similar
classified seeds, ioa.taxonomy.nearest_modules); without a benchmark file the benchmark split is empty.

**Levels** 1..5: for GSM8K-shaped answers (`reasoning ... #### 42`) the number of reasoning steps
(gsm8k.level_of); otherwise the tier of the item's module.

**Scoring** (`options.scoring`): `numeric`, the shared answer checker (answers.check_response); `code`, the
reply's code and the item's tests run in ioa.sandbox (HumanEval-style `check(entry_point)` when the tests
define `check` and an entry point is given, plain asserts otherwise); `judge`, the teacher grades the reply
against the reference with a fixed rubric (ioa.judge), ROUGE-L recorded beside each verdict. A judge needs
the teacher, so that domain is opened with its grader (`open_seed_domain`, as `ioa diagnose` does).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ioa.config import DomainConfig
from ioa.domains.answers import SOLVE_SYSTEM_PROMPT, check_response
from ioa.domains.arithmetic import spread_over_levels
from ioa.domains.base import Item, Module, Split, check_item_request, jsonl_objects
from ioa.domains.code import assemble_program, extract_code
from ioa.domains.gsm8k import count_steps, level_of
from ioa.errors import ConfigError, DataError, DomainError
from ioa.graph import Edge
from ioa.judge import Grade, Judge
from ioa.models.base import ChatModel, Message
from ioa.rundir import inputs_hash
from ioa.sandbox import ExecutionResult, SandboxLimits, run_tests
from ioa.taxonomy import (
    Taxonomy,
    TaxonomyBuild,
    TaxonomySettings,
    ensure_taxonomy,
    flag_small_modules,
    nearest_modules,
    read_taxonomy,
    summary,
)

LEVELS = 5
CODE_MAX_TOKENS = 512  # a whole function needs more room than one number
CODE_SYSTEM_PROMPT = (
    "You are an expert Python programmer. Solve the task in Python. Reply with the complete code (imports, "
    "helper functions and the function the task asks for) in a single ```python code block. Do not include "
    "tests or example usage."
)
JUDGE_SYSTEM_PROMPT = "Answer the question accurately and concisely. Give the essential answer first."
_ANNOTATION = re.compile(r"<<[^>]*>>")


class SeedOptions(BaseModel):
    """`domain.options` of a seed-data domain; an unknown option is an error (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid")

    seeds: str = "train.jsonl"  # the seed file inside data_path when data_path is a folder
    benchmark: str | None = None  # a benchmark file with the same fields (relative: next to the seeds)
    question_field: str = "question"
    answer_field: str = "answer"
    tests_field: str = "tests"
    entry_point_field: str = "entry_point"
    scoring: Literal["numeric", "code", "judge"] = "numeric"
    max_seed_items: int | None = Field(None, ge=1)
    taxonomy: Path | None = None  # default: runs/NAME/taxonomy.yaml
    min_modules: int = Field(10, ge=1)
    max_modules: int = Field(40, ge=1)
    min_items_per_module: int = Field(5, ge=1)
    proposal_sample: int = Field(24, ge=1)  # seed prompts the teacher sees when proposing modules
    classify_batch: int = Field(10, ge=1)  # items per classification prompt
    probe_share: float = Field(0.1, gt=0, lt=1)
    gate_share: float = Field(0.1, ge=0, lt=1)
    split_seed: int = 0
    timeout_s: float = Field(10.0, gt=0)  # per sandboxed test run (scoring: code)

    @model_validator(mode="after")
    def _consistent(self) -> SeedOptions:
        if self.min_modules > self.max_modules:
            raise ValueError(f"min_modules {self.min_modules} is above max_modules {self.max_modules}")
        if self.probe_share + self.gate_share >= 1:
            raise ValueError("probe_share + gate_share must leave a share for train")
        return self

    def taxonomy_settings(self) -> TaxonomySettings:
        return TaxonomySettings(self.min_modules, self.max_modules, self.min_items_per_module,
                                self.proposal_sample, self.classify_batch)  # fmt: skip


def seed_options(config: DomainConfig) -> SeedOptions:
    try:
        return SeedOptions.model_validate(config.options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
        fix = "fix or remove that option (the options are listed in ioa.domains.seeddata.SeedOptions)"
        raise ConfigError(f"domain.options: {problems}", fix) from None


@dataclass(frozen=True)
class SeedRecord:
    """One task of a seed or benchmark file."""

    id: str
    prompt: str
    answer: str  # the final answer (numeric), the reference (judge), "" (code)
    solution: str  # a worked solution or reference program, when the file has one
    tests: str
    entry_point: str
    steps: int | None  # reasoning steps of a GSM8K-shaped answer
    source: str
    line: int


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def load_records(path: Path, options: SeedOptions, prefix: str) -> list[SeedRecord]:
    """Parse a seed or benchmark file; a bad line is a DataError naming the file, line and needed fields."""
    q, a, t = options.question_field, options.answer_field, options.tests_field
    needs = f"{q!r} and {t!r} (tests)" if options.scoring == "code" else f"{q!r} and {a!r}"
    fix = f"each line must be a JSON object with {needs} (field names: domain.options question_field/answer_field/...)"
    records: list[SeedRecord] = []
    for number, where, row in jsonl_objects(path, fix):
        prompt = _text(row.get(q))
        if not prompt or not prompt.strip():
            raise DataError(f"{where} has no text in {q!r}", fix)
        answer, solution, tests, steps = "", "", "", None
        raw_answer = _text(row.get(a))
        if options.scoring == "code":
            raw_tests = row.get(t)
            tests = "\n".join(raw_tests) if isinstance(raw_tests, list) else _text(raw_tests) or ""
            if not tests.strip():
                raise DataError(f"{where} has no tests in {t!r}", fix)
            solution = raw_answer or ""
        elif raw_answer is None or not raw_answer.strip():
            raise DataError(f"{where} has no text in {a!r}", fix)
        elif options.scoring == "numeric" and "####" in raw_answer:  # GSM8K shape: reasoning, then #### final
            reasoning, final = raw_answer.rsplit("####", 1)
            answer = final.strip().replace(",", "").rstrip(".")
            reasoning = _ANNOTATION.sub("", reasoning).strip()
            solution = f"{reasoning}\n#### {answer}" if reasoning else f"#### {answer}"
            steps = count_steps(raw_answer)
        else:
            answer = raw_answer.strip()
        if options.scoring != "code" and not answer:
            raise DataError(f"{where} has an empty final answer", fix)
        entry = _text(row.get(options.entry_point_field)) or ""
        records.append(SeedRecord(f"{prefix}-{number}", prompt.strip(), answer, solution, tests, entry.strip(),
                                  steps, path.name, number))  # fmt: skip
    if not records:
        raise DataError(f"{path} holds no tasks", fix)
    return records


def _normal(prompt: str) -> str:
    return " ".join(prompt.split())


@dataclass(frozen=True)
class SeedData:
    """The parsed input: options, the seeds the taxonomy covers, the benchmark."""

    options: SeedOptions
    seeds_path: Path
    seeds: list[SeedRecord]
    benchmark: list[SeedRecord]
    left_out: int  # seeds beyond max_seed_items or whose prompt is also a benchmark prompt


def load_seed_data(config: DomainConfig) -> SeedData:
    options = seed_options(config)
    if config.data_path is None:
        raise DomainError("the seed-data domain needs domain.data_path", "set it to your JSONL file or its folder")
    base = Path(config.data_path)
    seeds_path, folder = (base / options.seeds, base) if base.is_dir() else (base, base.parent)
    if not seeds_path.is_file():
        raise DomainError(f"seed file {seeds_path} does not exist",
                          "set domain.data_path to the JSONL file, or to its folder with domain.options.seeds")
    seeds = load_records(seeds_path, options, seeds_path.stem)
    benchmark: list[SeedRecord] = []
    if options.benchmark is not None:
        bench_path = folder / options.benchmark
        if not bench_path.is_file():
            raise DomainError(f"benchmark file {bench_path} does not exist",
                              "set domain.options.benchmark to a file next to the seeds, or remove it")
        stem = bench_path.stem if bench_path.stem != seeds_path.stem else f"{bench_path.stem}-benchmark"
        benchmark = load_records(bench_path, options, stem)
    # A seed that is also a benchmark task would leak the benchmark into probes or training data.
    protected = {_normal(r.prompt) for r in benchmark}
    kept = [r for r in seeds if _normal(r.prompt) not in protected]
    if options.max_seed_items:  # the first N in a fixed hash order: a larger N only adds items
        kept.sort(key=lambda r: (hashlib.sha256(_normal(r.prompt).encode()).hexdigest(), r.line))
        kept = sorted(kept[: options.max_seed_items], key=lambda r: r.line)
    return SeedData(options, seeds_path, kept, benchmark, len(seeds) - len(kept))


def partition(ids: Sequence[str], module: str, probe_share: float, gate_share: float, seed: int) -> dict[str, Split]:
    """probe / gate / train of one module's items: a seeded shuffle, fixed whatever seed `items` is called with."""
    order = sorted(ids)
    random.Random(f"ioa-seed-split|{seed}|{module}").shuffle(order)
    n = len(order)
    n_probe = max(1, round(n * probe_share)) if n else 0
    n_gate = max(1, round(n * gate_share)) if n >= 3 and gate_share > 0 else 0
    while n >= 2 and n_probe + n_gate > n - 1:  # keep at least one seed for synthesis
        if n_gate > 1 or (n_gate == 1 and n_probe == 1):
            n_gate -= 1
        else:
            n_probe -= 1
    splits: dict[str, Split] = {}
    for k, item in enumerate(order):
        splits[item] = "probe" if k < n_probe else "gate" if k < n_probe + n_gate else "train"
    return splits


class SeedDataDomain:
    """A seed-data domain: the taxonomy's modules, stratified fixed splits, numeric/code/judge scoring."""

    name = "seed"
    levels = LEVELS

    def __init__(self, data: SeedData, build: TaxonomyBuild, judge: Judge | None = None) -> None:
        self.data = data
        self.options = data.options
        self.build = build
        self.taxonomy: Taxonomy = build.taxonomy
        self.judge = judge
        self.max_tokens = CODE_MAX_TOKENS if self.options.scoring == "code" else 256
        self.limits = SandboxLimits(timeout_s=self.options.timeout_s)
        self.grades: list[dict[str, object]] = []  # judge verdicts with ROUGE-L, one per check
        by_module: dict[str, list[SeedRecord]] = defaultdict(list)
        for record in data.seeds:
            if record.id in self.taxonomy.assignments:
                by_module[self.taxonomy.assignments[record.id]].append(record)
        self.unassigned = len(data.seeds) - sum(map(len, by_module.values()))
        self._by_module = dict(by_module)
        self._modules = [Module(m.id, m.title, m.description, m.tier) for m in self.taxonomy.modules
                         if by_module.get(m.id)]  # fmt: skip
        self._tiers = {m.id: m.tier for m in self.taxonomy.modules}
        self._splits: dict[str, Split] = {}
        for module, records in by_module.items():
            self._splits.update(partition([r.id for r in records], module, self.options.probe_share,
                                          self.options.gate_share, self.options.split_seed))  # fmt: skip
        self._benchmark: dict[str, list[SeedRecord]] | None = None

    # -- what the rest of ioa asks of a domain ----------------------------------------------------------------

    def modules(self) -> list[Module]:
        return list(self._modules)

    def items(self, module: str, n: int, seed: int, split: Split = "probe", level: int | None = None) -> list[Item]:
        check_item_request("seed", module, [m.id for m in self._modules], n, split, level, LEVELS)
        if split == "benchmark":
            pool = self.benchmark_pools().get(module, [])
        else:
            pool = [r for r in self._by_module[module] if self._splits[r.id] == split]
        streams: dict[int, Iterator[Item]] = {}
        for lv in [level] if level else range(1, LEVELS + 1):
            chosen = [r for r in pool if self.level(r, module) == lv]
            random.Random(f"ioa-seed|{module}|{lv}|{split}|{seed}").shuffle(chosen)
            streams[lv] = (self._item(r, module, split) for r in chosen)
        return spread_over_levels(streams, n)

    def messages(self, item: Item) -> list[Message]:
        system = {"numeric": SOLVE_SYSTEM_PROMPT, "code": CODE_SYSTEM_PROMPT, "judge": JUDGE_SYSTEM_PROMPT}
        return [{"role": "system", "content": system[self.options.scoring]}, {"role": "user", "content": item.prompt}]

    def check(self, item: Item, response: str) -> bool:
        if self.options.scoring == "numeric":
            return check_response(response, item.answer)
        if self.options.scoring == "code":
            return self.run(item, response).passed
        return self.grade(item, response).correct

    # -- beyond the protocol ----------------------------------------------------------------------------------

    @property
    def digest(self) -> str:
        """Changes whenever what the domain serves changes (taxonomy edits, options): part of diagnose's inputs."""
        ids = [r.id for r in self.data.seeds]
        return inputs_hash("seed-domain", self.taxonomy.digest(ids), self.options, str(self.data.seeds_path))

    def proposed_edges(self) -> list[Edge]:
        """The taxonomy's prerequisites among the modules this domain serves (source "proposed")."""
        served = {m.id for m in self._modules}
        return [e for e in self.taxonomy.edges() if e.prereq in served and e.module in served]

    def summary(self) -> dict[str, Any]:
        return summary(self.build, [r.id for r in self.data.seeds])

    def level(self, record: SeedRecord, module: str) -> int:
        if record.steps is not None:
            return level_of(record.steps)
        return min(max(self._tiers.get(module, 1), 1), LEVELS)

    def split_of(self, item_id: str) -> Split | None:
        return self._splits.get(item_id)

    def benchmark_pools(self) -> dict[str, list[SeedRecord]]:
        """Benchmark records by module, labelled once, on first use, by the most similar classified seeds."""
        if self._benchmark is None:
            examples = [(r.prompt, m) for m, records in self._by_module.items() for r in records]
            labels = nearest_modules({r.id: r.prompt for r in self.data.benchmark}, examples)
            pools: dict[str, list[SeedRecord]] = defaultdict(list)
            for r in self.data.benchmark:
                pools[labels[r.id]].append(r)
            self._benchmark = dict(pools)
        return self._benchmark

    def run(self, item: Item, response: str) -> ExecutionResult:
        """The sandboxed test run of a reply (scoring: code)."""
        entry = item.meta.get("entry_point") or None
        tests = item.meta["tests"]
        code = extract_code(response, entry)
        if entry and re.search(rf"def\s+{re.escape(entry)}\s*\(", item.prompt):  # a stub to complete
            code = assemble_program(item.prompt, code, entry)
        return run_tests(code, tests, entry if entry and "def check(" in tests else None, self.limits)

    def grade(self, item: Item, response: str) -> Grade:
        """The teacher's verdict on a reply (scoring: judge), recorded with its ROUGE-L."""
        if self.judge is None:
            raise DomainError("a judge-scored seed domain has no grader",
                              "open it with ioa.domains.seeddata.open_seed_domain (ioa diagnose does)")
        grade = self.judge.grade(item.prompt, item.answer, response)
        self.grades.append({"item_id": item.id, "module": item.module,
                            "response_sha": hashlib.sha256(response.encode()).hexdigest()[:12], **grade.to_dict()})
        return grade

    def _item(self, record: SeedRecord, module: str, split: Split) -> Item:
        meta = {"source": record.source, "line": str(record.line), "split": split}
        if self.options.scoring == "code":
            meta |= {"tests": record.tests, "entry_point": record.entry_point}
        return Item(id=record.id, module=module, prompt=record.prompt, answer=record.answer,
                    level=self.level(record, module), solution=record.solution, meta=meta)  # fmt: skip


def open_seed_domain(
    config: DomainConfig,
    teacher: ChatModel,
    default_taxonomy: Path,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    data: SeedData | None = None,
) -> SeedDataDomain:
    """The seed-data domain with its taxonomy: read from its file, or built (and completed) by the teacher;
    a judge-scored domain gets the teacher as its grader. `data`: the config's seed data, when already loaded."""
    data = data or load_seed_data(config)
    options = data.options
    path = options.taxonomy or default_taxonomy
    prompts = {r.id: r.prompt for r in data.seeds}
    build = ensure_taxonomy(teacher, prompts, path, options.taxonomy_settings(), data.seeds_path.name, progress)
    return SeedDataDomain(data, build, Judge(teacher) if options.scoring == "judge" else None)


def seed_domain_from_file(config: DomainConfig) -> SeedDataDomain:
    """The seed-data domain from an existing taxonomy file (`get_domain`: no teacher, so nothing is built).
    Items the file does not assign are left out; a judge-scored domain has no grader here."""
    data = load_seed_data(config)
    path = data.options.taxonomy
    if path is None:
        raise DomainError("the seed-data domain has no taxonomy yet",
                          "run `ioa diagnose CONFIG` first (the teacher writes runs/NAME/taxonomy.yaml), "
                          "or set domain.options.taxonomy to a taxonomy file")  # fmt: skip
    if not Path(path).is_file():
        raise DomainError(f"taxonomy file {path} does not exist",
                          "run `ioa diagnose CONFIG` first, which has the teacher build it there")  # fmt: skip
    loaded = read_taxonomy(Path(path))
    flag_small_modules(loaded.taxonomy, data.options.min_items_per_module, [r.id for r in data.seeds])
    return SeedDataDomain(data, TaxonomyBuild(loaded.taxonomy, Path(path), False, loaded.edited, 0, 0))
