"""`ioa diagnose`: probe teacher and student per module, then score gaps, graph, severity and targets."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ioa.config import HTTPConfig, RunConfig
from ioa.domains import get_domain, is_seed_domain
from ioa.domains.base import Domain, Item, Module
from ioa.domains.seeddata import SeedDataDomain, load_seed_data, open_seed_domain
from ioa.errors import ConfigError
from ioa.graph import Edge
from ioa.identifier import ModuleScore, build_graph, diagnose_scores, mastered_by_ratio
from ioa.models.base import ChatModel, SamplingParams
from ioa.models.cache import CachedModel, CallCache
from ioa.models.resolve import load_cached
from ioa.probing import ProbeRow, accuracy_by_module, probe
from ioa.rundir import RunDir, inputs_hash, read_json, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)

ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass
class Diagnosis:
    scores: list[ModuleScore]
    edges: list[Edge]
    rows: list[ProbeRow]
    taxonomy: dict[str, Any] | None = None  # a seed-data domain's taxonomy summary (ioa.taxonomy.summary)

    def score(self, module: str) -> ModuleScore:
        return next(s for s in self.scores if s.module == module)

    @property
    def targets(self) -> list[str]:
        return [s.module for s in self.scores if s.target]


def selected_modules(domain: Domain, wanted: list[str]) -> list[Module]:
    """The domain's modules, or the configured subset of them (unknown ids are a config error)."""
    modules = domain.modules()
    if not wanted:
        return modules
    known = {m.id for m in modules}
    if unknown := [w for w in wanted if w not in known]:
        raise ConfigError(
            f"domain.modules names unknown module(s) {', '.join(unknown)} of domain {domain.name}",
            f"choose from: {', '.join(sorted(known))}",
        )
    return [m for m in modules if m.id in wanted]


def probe_items(domain: Domain, modules: list[Module], n: int, seed: int) -> list[Item]:
    return [item for module in modules for item in domain.items(module.id, n, seed, split="probe")]


def declared_edges(modules: list[Module]) -> list[Edge]:
    """Declared prerequisites among the selected modules; one outside the selection counts as given."""
    ids = {m.id for m in modules}
    return [Edge(p, m.id, "declared") for m in modules for p in m.prerequisites if p in ids]


def open_teacher(config: RunConfig, run: RunDir, cache: CallCache) -> CachedModel:
    """The run's teacher: cached, and for an HTTP endpoint with its settings, accounting and budget."""
    from ioa.accounting import Accountant

    accountant = Accountant.from_config(config.accounting, run / "teacher_ledger.jsonl")
    http = config.teacher.http or HTTPConfig()
    if http.failure_summary is None:  # failed requests are summarised in the run directory by default
        http = http.model_copy(update={"failure_summary": run / "teacher_failures.json"})
    return load_cached(config.teacher.spec, cache, config.teacher.n_ctx, http, accountant)


def open_domain(
    config: RunConfig, run: RunDir, teacher: ChatModel, progress: ProgressFactory | None = None
) -> Domain:
    """The configured domain. A seed-data domain first gets its taxonomy (DESIGN §2.1): read from its file
    (domain.options.taxonomy, default runs/NAME/taxonomy.yaml) or built there by the teacher."""
    if not is_seed_domain(config.domain):
        return get_domain(config.domain)
    return open_seed_domain(config.domain, teacher, run / "taxonomy.yaml", progress)


def diagnose(
    config: RunConfig,
    run: RunDir,
    progress: ProgressFactory | None = None,
    teacher: ChatModel | None = None,
    student: ChatModel | None = None,
) -> Diagnosis:
    """Probe both models on every module and write diagnosis/ (probe rows, scores, graph). A seed-data domain
    has the teacher build its taxonomy first; its prerequisites enter the graph as proposed edges."""
    # Config and data errors first, before any model is loaded; a seed-data domain then needs the teacher.
    known = None if is_seed_domain(config.domain) else get_domain(config.domain)
    seed_data = load_seed_data(config.domain) if known is None else None
    cache = CallCache(run.cache_path)
    teacher = teacher or open_teacher(config, run, cache)
    domain = known or open_seed_domain(config.domain, teacher, run / "taxonomy.yaml", progress, seed_data)
    taxonomy = domain.summary() if isinstance(domain, SeedDataDomain) else None
    student = student or load_cached(config.student.spec, cache, config.student.n_ctx)
    icfg = config.identifier
    # A seed-data domain adds what it serves (taxonomy, options): an edited taxonomy reruns the diagnosis.
    digest = inputs_hash(
        "diagnose", teacher.fingerprint, student.fingerprint, config.domain, icfg, config.seed,
        config.teacher.max_tokens, config.student.max_tokens,
        *([domain.digest] if isinstance(domain, SeedDataDomain) else []),
    )
    out = run / "diagnosis"
    if run.is_done("diagnose", digest) and (out / "scores.json").exists():
        return replace(load_diagnosis(run), taxonomy=taxonomy)

    modules = selected_modules(domain, config.domain.modules)
    items = probe_items(domain, modules, icfg.probes_per_module, config.seed)
    rows: list[ProbeRow] = []
    start = time.perf_counter()
    for role, model, max_tokens in (
        ("teacher", teacher, config.teacher.max_tokens),
        ("student", student, config.student.max_tokens),
    ):
        on_progress = progress(f"probing {role} ({model.name})", len(items)) if progress else None
        rows += probe(model, domain, items, SamplingParams(max_tokens=max_tokens), role, on_progress)

    probing_seconds = time.perf_counter() - start
    teacher_acc = accuracy_by_module([r for r in rows if r.role == "teacher"])
    student_acc = accuracy_by_module([r for r in rows if r.role == "student"])
    ids = [m.id for m in modules]
    edges = build_graph(ids, declared=declared_edges(modules), proposed=proposed_edges(domain, ids), measured=[])
    scores = diagnose_scores(teacher_acc, student_acc, edges, icfg, mastered_by_ratio(config.organizer.tau_mastery))

    write_jsonl(out / "probes.jsonl", rows)
    write_json(out / "scores.json", {"domain": domain.name, "teacher": teacher.name, "student": student.name,
                                     "probe_prompt": domain.messages(items[0])[0]["content"] if items else "",
                                     "scores": [s.to_dict() for s in scores]})
    write_json(out / "graph.json", {"nodes": ids, "edges": [edge_dict(e) for e in edges]})
    if isinstance(domain, SeedDataDomain):
        write_json(out / "taxonomy.json", taxonomy)
        if domain.grades:  # judge verdicts with ROUGE-L beside them
            write_jsonl(out / "judge.jsonl", domain.grades)
    run.mark_done("diagnose", digest, targets=[s.module for s in scores if s.target])
    run.event("diagnosed", targets=[s.module for s in scores if s.target], probes=len(rows),
              seconds=probing_seconds)
    return Diagnosis(scores, edges, rows, taxonomy)


def proposed_edges(domain: Domain, ids: list[str]) -> list[Edge]:
    """The prerequisites a seed-data domain's teacher proposed, among the selected modules."""
    if not isinstance(domain, SeedDataDomain):
        return []
    chosen = set(ids)
    return [e for e in domain.proposed_edges() if e.prereq in chosen and e.module in chosen]


def edge_dict(edge: Edge) -> dict[str, Any]:
    return {"prereq": edge.prereq, "module": edge.module, "source": edge.source, "strength": edge.strength}


def load_diagnosis(run: RunDir) -> Diagnosis:
    out = run / "diagnosis"
    scores = [ModuleScore.from_dict(s) for s in read_json(out / "scores.json")["scores"]]
    edges = [Edge(**e) for e in read_json(out / "graph.json")["edges"]]
    rows = [ProbeRow(**r) for r in read_jsonl(out / "probes.jsonl")]
    return Diagnosis(scores, edges, rows)
