"""The teacher-built taxonomy of a seed-data domain (DESIGN §2.1), kept as an editable `taxonomy.yaml`.

Building it takes four steps, each a plain function over plain data:

1. `propose_modules`: the teacher sees a sample of seed prompts and proposes categories of modules (10-40
   leaves by default, unique snake_case ids, difficulty tier 1..5). A malformed reply is repaired (fences,
   prose, trailing commas, ids made snake_case, tiers clamped) or retried; unusable after the retries is a
   TeacherReplyError.
2. `classify_items`: several items per prompt. Every item ends with exactly one module: a missing or unknown
   label gets one retry with the item alone, then the module whose title and description are closest to the
   item by ROUGE-L; those fallbacks are counted and listed in the file.
3. `merge_small_modules`: a module with too few items is merged into the largest module of its category, or
   flagged when it has no sibling (or merging would leave fewer modules than the minimum).
4. `propose_edges`: the teacher names each module's prerequisites among the listed modules; unknown ids and
   self-loops are dropped (cycles are broken later by the graph code).

**Reruns.** The file's first comment lines carry the hash of what ioa wrote. A file that differs from it
was edited by the user and is used as it is (new, renamed or removed modules, moved items, edited
prerequisites); the teacher only classifies items that have no assignment, and small modules are flagged,
never merged. An unedited file is reused when it was built from the same inputs (teacher, seed sample,
limits) and rebuilt otherwise (the call cache makes the repeated calls free).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from ioa.adapter import InvalidReply, find_json_object
from ioa.dedup import rouge_l, tokens
from ioa.errors import ConfigError, TeacherReplyError
from ioa.graph import Edge
from ioa.models.base import ChatModel, ChatRequest, Message, SamplingParams
from ioa.rundir import atomic_write_text, inputs_hash

TIERS = 5
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
ATTEMPTS = 3  # teacher tries for the hierarchy and the edges: greedy first, then sampled
PROMPT_CHARS = 400  # an item as the teacher sees it when classifying (long prompts are cut)
SAMPLE_CHARS = 240  # a sample prompt as the teacher sees it when proposing modules
REQUEST_CHUNK = 8  # classification prompts per generate() call (progress, bounded crash loss)

Progress = Callable[[str, int], Callable[[int], None]]


class TaxonomyError(ConfigError):
    """taxonomy.yaml is not valid YAML or does not describe a usable taxonomy."""


@dataclass
class TaxonomyModule:
    """A leaf of the hierarchy. `prerequisites` are module ids (edges of source "proposed")."""

    id: str
    title: str
    category: str
    description: str = ""
    tier: int = 1
    prerequisites: list[str] = field(default_factory=list)
    flag: str = ""  # why the module is suspect (too few items); empty when fine


@dataclass
class Taxonomy:
    """Categories → modules, each seed item's module, and a record of what ioa decided on its own."""

    categories: dict[str, str]  # id → title, in order
    modules: list[TaxonomyModule]
    assignments: dict[str, str] = field(default_factory=dict)  # item id → module id
    fallbacks: list[str] = field(default_factory=list)  # items assigned by ROUGE-L, not by the teacher
    notes: list[str] = field(default_factory=list)  # merges, flags, dropped edges

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.modules]

    def module(self, module_id: str) -> TaxonomyModule:
        return next(m for m in self.modules if m.id == module_id)

    def counts(self, items: Sequence[str] | None = None) -> Counter[str]:
        """Items per module (every module present, zero included), over `items` when given."""
        wanted = None if items is None else set(items)
        counts = Counter({m: 0 for m in self.ids})
        counts.update(m for i, m in self.assignments.items() if wanted is None or i in wanted)
        return counts

    def edges(self) -> list[Edge]:
        known = set(self.ids)
        return [Edge(p, m.id, "proposed") for m in self.modules for p in m.prerequisites if p in known and p != m.id]

    def digest(self, items: Sequence[str] | None = None) -> str:
        """Hash of what the domain uses: modules, tiers, edges and the assignments of `items`."""
        wanted = None if items is None else set(items)
        assigned = sorted((i, m) for i, m in self.assignments.items() if wanted is None or i in wanted)
        modules = [(m.id, m.category, m.title, m.description, m.tier, sorted(m.prerequisites)) for m in self.modules]
        return inputs_hash("taxonomy", modules, assigned)


def snake(text: str) -> str:
    """A teacher's id or title as a snake_case id ("Fractions & Ratios" → "fractions_ratios")."""
    out = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return f"m_{out}" if out[:1].isdigit() else out


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_format(name: str, model: type[BaseModel]) -> dict[str, Any]:
    """Structured-output hint for backends that honour it (the reply is validated anyway)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": model.model_json_schema()}}


def _params(attempt: int, max_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0 if attempt == 0 else 0.7, max_tokens=max_tokens, seed=attempt)


# ------------------------------------------------------------------------------------- 1. modules


class _ProposedModule(BaseModel):
    id: str = ""
    title: str = ""
    description: str = ""
    tier: int = 1
    category: str = ""  # only in the flat shape {"modules": [...]}

    @field_validator("tier", mode="before")
    @classmethod
    def _tier(cls, value: Any) -> int:
        """A tier the teacher wrote as "2", 2.0 or "tier 3" is repaired; anything else becomes 1."""
        found = re.search(r"\d+", str(value))
        return int(found.group()) if found else 1


class _ProposedCategory(BaseModel):
    id: str = ""
    title: str = ""
    modules: list[_ProposedModule] = Field(min_length=1)


class _Hierarchy(BaseModel):
    categories: list[_ProposedCategory] = Field(min_length=1)


HIERARCHY_TEXT = (
    "You are an expert teacher designing a curriculum. Below are sample problems from a collection. Propose the "
    "knowledge modules a student needs to solve problems like these, grouped into a few categories.\n"
    "Rules: between {n_min} and {n_max} modules in total; each module is one teachable skill; ids are short, "
    "unique snake_case words; tier is the module's difficulty from 1 (easiest) to 5 (hardest).\n"
    'Reply with ONE JSON object and nothing else: {{"categories": [{{"id": "<snake_case>", "title": "<title>", '
    '"modules": [{{"id": "<snake_case>", "title": "<title>", "description": "<one line: what it covers>", '
    '"tier": <1-5>}}]}}]}}'
)


# What went wrong with a reply, as the teacher is told on the retry (InvalidReply reasons).
_PROBLEMS = {"no_json": "it held no JSON object", "invalid_json": "its JSON was malformed",
             "schema": "its JSON did not have the asked shape"}  # fmt: skip


def _problem(reason: str) -> str:
    return _PROBLEMS.get(reason, reason)


def hierarchy_messages(sample: Sequence[str], n_min: int, n_max: int, problem: str = "") -> list[Message]:
    listed = "\n".join(f"{i}. {_one_line(text, SAMPLE_CHARS)}" for i, text in enumerate(sample, 1))
    user = f"Sample problems:\n\n{listed}"
    if problem:
        user += f"\n\nYour previous reply could not be used ({problem}). Follow the rules and the JSON shape exactly."
    return [{"role": "system", "content": HIERARCHY_TEXT.format(n_min=n_min, n_max=n_max)},
            {"role": "user", "content": user}]  # fmt: skip


def parse_hierarchy(text: str, n_min: int, n_max: int) -> Taxonomy:
    """A teacher's hierarchy reply as a Taxonomy (no assignments yet); InvalidReply says what is wrong."""
    data = find_json_object(text, frozenset({"categories", "modules"}))
    if "categories" not in data and isinstance(data.get("modules"), list):  # flat: group by each module's category
        groups: dict[str, list[Any]] = defaultdict(list)
        for m in data["modules"]:
            groups[str(m.get("category") or "general") if isinstance(m, dict) else "general"].append(m)
        data = {"categories": [{"id": c, "title": c, "modules": ms} for c, ms in groups.items()]}
    try:
        hierarchy = _Hierarchy.model_validate(data)
    except ValidationError:
        raise InvalidReply("schema") from None
    categories: dict[str, str] = {}
    modules: list[TaxonomyModule] = []
    for c in hierarchy.categories:
        cid = snake(c.id or c.title) or f"category_{len(categories) + 1}"
        while cid in categories:  # two categories may share a name; their modules stay apart
            cid += "_2"
        categories[cid] = c.title.strip() or cid.replace("_", " ")
        for m in c.modules:
            mid = snake(m.id or m.title)
            if not mid:
                raise InvalidReply("a module without an id")
            title = m.title.strip() or mid.replace("_", " ")
            tier = min(max(m.tier, 1), TIERS)
            modules.append(TaxonomyModule(mid, title, cid, m.description.strip(), tier))
    duplicates = sorted(k for k, n in Counter(m.id for m in modules).items() if n > 1)
    if duplicates:
        raise InvalidReply(f"duplicate module ids {', '.join(duplicates)}")
    if not n_min <= len(modules) <= n_max:
        raise InvalidReply(f"{len(modules)} modules, need {n_min} to {n_max}")
    return Taxonomy(categories, modules)


def sample_prompts(items: Mapping[str, str], k: int) -> list[str]:
    """A fixed sample of k seed prompts (same items, same sample)."""
    ids = sorted(items)
    return [items[i] for i in random.Random(f"ioa-taxonomy|{len(ids)}").sample(ids, min(k, len(ids)))]


def propose_modules(
    teacher: ChatModel, sample_items: Sequence[str], n_min: int = 10, n_max: int = 40, max_tokens: int = 2048
) -> Taxonomy:
    """The teacher's hierarchy for these sample prompts: categories of n_min..n_max modules."""
    problem = ""
    for attempt in range(ATTEMPTS):
        messages = hierarchy_messages(sample_items, n_min, n_max, problem)
        request = ChatRequest.of(messages, _params(attempt, max_tokens), _json_format("taxonomy", _Hierarchy))
        reply = teacher.generate([request])[0].text
        try:
            return parse_hierarchy(reply, n_min, n_max)
        except InvalidReply as exc:
            problem = _problem(exc.reason)
    raise TeacherReplyError(
        f"the teacher ({teacher.name}) gave no usable module hierarchy in {ATTEMPTS} tries (last: {problem})",
        "use a stronger teacher, widen domain.options min_modules/max_modules, or write taxonomy.yaml yourself",
    )


# ------------------------------------------------------------------------------------- 2. items


class _Labels(BaseModel):
    labels: dict[str, Any]


@dataclass(frozen=True)
class Classification:
    """How the items of one classify_items call got their module."""

    labelled: int  # by the teacher, first try
    retried: int  # by the teacher, alone, on the retry
    fallback: int  # by ROUGE-L against module descriptions


def classify_messages(taxonomy: Taxonomy, texts: Sequence[str]) -> list[Message]:
    listed = "\n".join(f"- {m.id}: {m.title}" + (f" — {m.description}" if m.description else "")
                       for m in taxonomy.modules)  # fmt: skip
    system = (
        "You sort practice problems into the modules of a curriculum. The modules (id: title — what it covers):\n"
        f"{listed}\n"
        "For each numbered problem choose the ONE module it mainly practises, by its id. Reply with ONE JSON object "
        'and nothing else: {"labels": {"1": "<module id>", "2": "<module id>", ...}}'
    )
    user = "\n\n".join(f"{i}. {_one_line(text, PROMPT_CHARS)}" for i, text in enumerate(texts, 1))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def resolve_label(label: Any, taxonomy: Taxonomy) -> str | None:
    """A teacher's label as a module id: the id itself, its snake_case form, or a module's title."""
    if not isinstance(label, str) or not label.strip():
        return None
    ids = set(taxonomy.ids)
    head = re.split(r"\s*[:(—]|\s-\s", label, maxsplit=1)[0]  # "add: Addition", "add (Addition)", "add - sums"
    for candidate in (label.strip(), snake(label), snake(head)):
        if candidate in ids:
            return candidate
    by_title = {snake(m.title): m.id for m in taxonomy.modules}
    return by_title.get(snake(label))


def parse_labels(text: str, n: int, taxonomy: Taxonomy) -> list[str | None]:
    """The module of each of n numbered items (None where missing or unknown); InvalidReply if no labels."""
    data = find_json_object(text, frozenset({"labels"}))
    raw = data["labels"]
    if isinstance(raw, list):  # ["a", "b"] in item order
        raw = {str(i): v for i, v in enumerate(raw, 1)}
    if not isinstance(raw, dict):
        raise InvalidReply("schema")
    by_number = {m.group(): v for k, v in raw.items() if (m := re.search(r"\d+", str(k)))}  # "1", "#1", "Problem 1"
    return [resolve_label(by_number.get(str(i)), taxonomy) for i in range(1, n + 1)]


def closest_module(text: str, taxonomy: Taxonomy) -> str:
    """The module whose title and description are closest to the text by ROUGE-L (first one on a tie)."""
    toks = tokens(text)
    scores = [rouge_l(toks, tokens(f"{m.title} {m.description}")) for m in taxonomy.modules]
    return taxonomy.modules[scores.index(max(scores))].id


def _ask_labels(
    teacher: ChatModel,
    taxonomy: Taxonomy,
    batches: Sequence[Sequence[str]],
    max_tokens: int,
    tick: Callable[[int], None],
) -> list[list[str | None]]:
    """The teacher's labels for each batch of prompts (None where missing or unknown)."""
    out: list[list[str | None]] = []
    fmt = _json_format("labels", _Labels)
    for start in range(0, len(batches), REQUEST_CHUNK):
        chunk = batches[start : start + REQUEST_CHUNK]
        requests = [ChatRequest.of(classify_messages(taxonomy, b), _params(0, max_tokens), fmt) for b in chunk]
        for batch, reply in zip(chunk, teacher.generate(requests), strict=True):
            try:
                out.append(parse_labels(reply.text, len(batch), taxonomy))
            except InvalidReply:
                out.append([None] * len(batch))
            tick(len(batch))
    return out


def classify_items(
    teacher: ChatModel,
    taxonomy: Taxonomy,
    items: Mapping[str, str],
    batch_size: int = 10,
    progress: Progress | None = None,
) -> Classification:
    """Give every item (id → prompt) exactly one module of the taxonomy; assignments and fallbacks are added
    to `taxonomy` in place."""
    ids = list(items)
    max_tokens = 48 + 24 * batch_size  # {"1": "module_id", ...} with room for a fence or a word around it
    tick = progress("classifying seed items", len(ids)) if progress else (lambda n: None)
    batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    labels = _ask_labels(teacher, taxonomy, [[items[i] for i in b] for b in batches], max_tokens, tick)
    found = {i: label for b, ls in zip(batches, labels, strict=True) for i, label in zip(b, ls, strict=True)}
    missing = [i for i in ids if found[i] is None]
    if missing:  # one retry each, alone (a batch can confuse a small teacher)
        retry_tick = progress("classifying again, one by one", len(missing)) if progress else tick
        for i, ls in zip(missing, _ask_labels(teacher, taxonomy, [[items[i]] for i in missing], 96, retry_tick),
                         strict=True):  # fmt: skip
            found[i] = ls[0]
    fallback = [i for i in ids if found[i] is None]
    for i in ids:
        taxonomy.assignments[i] = found[i] or closest_module(items[i], taxonomy)
    taxonomy.fallbacks += [i for i in fallback if i not in taxonomy.fallbacks]
    if fallback:
        taxonomy.notes.append(
            f"{len(fallback)} of {len(ids)} items had no valid label from the teacher after a retry; "
            "each went to the module closest by ROUGE-L (listed under fallback_items)"
        )
    return Classification(labelled=len(ids) - len(missing), retried=len(missing) - len(fallback),
                          fallback=len(fallback))  # fmt: skip


# ------------------------------------------------------------------------------------- 3. small modules


def merge_small_modules(taxonomy: Taxonomy, min_items: int, n_min: int = 1) -> list[str]:
    """Merge each module with fewer than `min_items` items into its category's largest other module, smallest
    first; flag it instead when it has no sibling or when merging would leave fewer than `n_min` modules.
    Returns what happened (also appended to taxonomy.notes)."""
    done: list[str] = []
    while True:
        counts = taxonomy.counts()
        small = sorted((m for m in taxonomy.modules if counts[m.id] < min_items and not m.flag),
                       key=lambda m: (counts[m.id], m.id))  # fmt: skip
        if not small:
            break
        module = small[0]
        siblings = sorted((m for m in taxonomy.modules if m.category == module.category and m is not module),
                          key=lambda m: (-counts[m.id], m.id))  # fmt: skip
        if not siblings or len(taxonomy.modules) <= n_min:
            why = "no other module in its category" if not siblings else f"merging would leave fewer than {n_min}"
            module.flag = f"only {counts[module.id]} items (fewer than {min_items}); not merged: {why}"
            done.append(f"flagged {module.id}: {module.flag}")
            continue
        target = siblings[0]
        _merge(taxonomy, module, target)
        done.append(f"merged {module.id} ({counts[module.id]} items) into {target.id}: fewer than {min_items} items")
    taxonomy.notes += done
    return done


def _merge(taxonomy: Taxonomy, module: TaxonomyModule, target: TaxonomyModule) -> None:
    for item, m in taxonomy.assignments.items():
        if m == module.id:
            taxonomy.assignments[item] = target.id
    taxonomy.modules.remove(module)
    target.prerequisites = _unique([*target.prerequisites, *module.prerequisites], drop=target.id)
    for m in taxonomy.modules:
        m.prerequisites = _unique([target.id if p == module.id else p for p in m.prerequisites], drop=m.id)


def _unique(ids: Sequence[str], drop: str) -> list[str]:
    return [p for p in dict.fromkeys(ids) if p != drop]


def flag_small_modules(taxonomy: Taxonomy, min_items: int, items: Sequence[str] | None = None) -> None:
    """Flag (never merge) modules with too few items: how a user-edited taxonomy is treated."""
    counts = taxonomy.counts(items)
    for m in taxonomy.modules:
        m.flag = f"only {counts[m.id]} items (fewer than {min_items})" if counts[m.id] < min_items else ""


# ------------------------------------------------------------------------------------- 4. edges


class _Prerequisites(BaseModel):
    prerequisites: dict[str, Any]


def edge_messages(taxonomy: Taxonomy, problem: str = "") -> list[Message]:
    listed = "\n".join(f"- {m.id} (tier {m.tier}): {m.title}" + (f" — {m.description}" if m.description else "")
                       for m in taxonomy.modules)  # fmt: skip
    system = (
        "You are an expert teacher ordering a curriculum. For each module below, list the modules from the same "
        "list that a student must master BEFORE it (its direct prerequisites). Use only ids from the list; a module "
        "may have none. Reply with ONE JSON object and nothing else: "
        '{"prerequisites": {"<module id>": ["<prerequisite id>", ...], ...}}'
    )
    user = f"Modules (id (tier): title — what it covers):\n{listed}"
    if problem:
        user += f"\n\nYour previous reply could not be used ({problem}). Follow the JSON shape exactly."
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_edges(text: str, taxonomy: Taxonomy) -> tuple[dict[str, list[str]], int]:
    """Prerequisites by module from a teacher's reply, and how many named ids were dropped (unknown, self)."""
    raw = find_json_object(text, frozenset({"prerequisites"}))["prerequisites"]
    if isinstance(raw, list):  # [{"module": m, "prerequisites": [...]}, ...]
        raw = {str(r.get("module")): r.get("prerequisites") for r in raw if isinstance(r, dict)}
    if not isinstance(raw, dict):
        raise InvalidReply("schema")
    found: dict[str, list[str]] = {}
    dropped = 0
    for key, value in raw.items():
        module = resolve_label(key, taxonomy)
        names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        prereqs = [resolve_label(p, taxonomy) for p in names]
        dropped += sum(p is None or p == module for p in prereqs) + (len(prereqs) if module is None else 0)
        if module is not None:
            found[module] = _unique([*found.get(module, []), *(p for p in prereqs if p)], drop=module)
    return found, dropped


def propose_edges(teacher: ChatModel, taxonomy: Taxonomy, max_tokens: int = 1536) -> list[Edge]:
    """The teacher's prerequisites, set on the taxonomy's modules; no usable reply after the retries leaves
    the modules without proposed edges (noted) rather than failing the run."""
    problem = ""
    for attempt in range(ATTEMPTS):
        request = ChatRequest.of(edge_messages(taxonomy, problem), _params(attempt, max_tokens),
                                 _json_format("prerequisites", _Prerequisites))  # fmt: skip
        try:
            found, dropped = parse_edges(teacher.generate([request])[0].text, taxonomy)
        except InvalidReply as exc:
            problem = _problem(exc.reason)
            continue
        for m in taxonomy.modules:
            m.prerequisites = found.get(m.id, [])
        if dropped:
            taxonomy.notes.append(f"dropped {dropped} proposed prerequisite(s) naming an unknown module or itself")
        return taxonomy.edges()
    taxonomy.notes.append(f"the teacher proposed no usable prerequisites in {ATTEMPTS} tries (last: {problem})")
    return []


# ------------------------------------------------------------------------------------- benchmark labels


_WORD = re.compile(r"[a-z]{3,}")


def nearest_modules(texts: Mapping[str, str], examples: Sequence[tuple[str, str]], k: int = 5) -> dict[str, str]:
    """A module for each text (id → text) without teacher calls: the similarity-weighted vote of its k most
    similar labelled examples (text, module), by word-set Jaccard; words in over half the examples are ignored."""
    if not examples:
        return {}
    sets = [set(_WORD.findall(text.lower())) for text, _ in examples]
    df = Counter(w for s in sets for w in s)
    common = {w for w, n in df.items() if n > len(sets) / 2}
    index: dict[str, list[int]] = defaultdict(list)
    for j, s in enumerate(sets):
        for w in s - common:
            index[w].append(j)
    sizes = [len(s - common) for s in sets]
    most_common = Counter(m for _, m in examples).most_common(1)[0][0]
    out: dict[str, str] = {}
    for tid, text in texts.items():
        words = set(_WORD.findall(text.lower())) - common
        shared = Counter(j for w in words for j in index.get(w, ()))
        similarity = {j: c / (len(words) + sizes[j] - c) for j, c in shared.items()}
        votes: Counter[str] = Counter()
        for j in sorted(similarity, key=lambda j: (-similarity[j], j))[:k]:
            votes[examples[j][1]] += similarity[j]
        out[tid] = min(votes, key=lambda m: (-votes[m], m)) if votes else most_common  # no word shared at all
    return out


# ------------------------------------------------------------------------------------- taxonomy.yaml

HEADER = """\
# ioa taxonomy of {source}: modules proposed by the teacher, each seed item's module, and prerequisites.
# You may edit this file; the next `ioa diagnose` uses your edits as they are:
#   - change titles, descriptions, tiers (1 easiest .. 5 hardest); add, remove, rename or move modules
#     (ids: snake_case, unique; a renamed or removed module's items must be moved under `assignments`);
#   - move an item: change the module after its id under `assignments` (the comment shows its prompt);
#     delete an item's line to have the teacher classify it again;
#   - edit `prerequisites`: ids of modules that must be learned before the module.
# `items`, `flag`, `notes` and `fallback_items` are written by ioa for information; edits to them are ignored.
# ioa rewrites an edited file only to add items it had to classify (your content stays, comments do not).
# Delete this file to have the teacher build the taxonomy afresh.
"""
_STATE = re.compile(r"^# ioa-state: sha256=([0-9a-f]+) inputs=(\S+) user-edited=(yes|no)\s*$")


@dataclass(frozen=True)
class LoadedTaxonomy:
    taxonomy: Taxonomy
    inputs: str  # the inputs hash ioa wrote ("" when the state line is gone)
    edited: bool  # the body differs from what ioa wrote, or ioa wrote it over a user's edit


def _scalar(text: str) -> str:
    """A string as a one-line YAML scalar, quoted only when it must be ("yes", "1", "a: b")."""
    return yaml.safe_dump([text], default_flow_style=True, width=10**6, allow_unicode=True).strip()[1:-1]


def render_taxonomy(taxonomy: Taxonomy, prompts: Mapping[str, str]) -> str:
    """The YAML body (without the header): categories → modules, notes, fallbacks, then one line per item."""
    counts = taxonomy.counts(list(prompts) if prompts else None)
    categories = []
    for cid, title in taxonomy.categories.items():
        modules = []
        for m in (m for m in taxonomy.modules if m.category == cid):
            entry: dict[str, Any] = {"id": m.id, "title": m.title, "description": m.description, "tier": m.tier,
                                     "prerequisites": list(m.prerequisites), "items": counts[m.id]}  # fmt: skip
            if m.flag:
                entry["flag"] = m.flag
            modules.append(entry)
        if modules:
            categories.append({"id": cid, "title": title, "modules": modules})
    body = yaml.safe_dump({"version": 1, "categories": categories}, sort_keys=False, allow_unicode=True, width=110)
    body = re.sub(r"prerequisites:\n((?:\s+- .*\n)+)", _flow_list, body)  # [a, b] reads better than a block
    if taxonomy.notes:
        body += yaml.safe_dump({"notes": taxonomy.notes}, sort_keys=False, allow_unicode=True, width=110)
    if taxonomy.fallbacks:
        body += f"fallback_items: [{', '.join(_scalar(i) for i in taxonomy.fallbacks)}]\n"
    body += "assignments:\n" if taxonomy.assignments else "assignments: {}\n"
    for item, module in taxonomy.assignments.items():
        comment = f"  # {_one_line(prompts[item], 70)}" if item in prompts else ""
        body += f"  {_scalar(item)}: {_scalar(module)}{comment}\n"
    return body


def _flow_list(match: re.Match[str]) -> str:
    values = [line.strip()[2:] for line in match.group(1).splitlines()]
    return f"prerequisites: [{', '.join(values)}]\n"


def _sha(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def write_taxonomy(
    path: Path, taxonomy: Taxonomy, prompts: Mapping[str, str], inputs: str, source: str, user_edited: bool = False
) -> None:
    body = render_taxonomy(taxonomy, prompts)
    state = f"# ioa-state: sha256={_sha(body)} inputs={inputs} user-edited={'yes' if user_edited else 'no'}\n"
    atomic_write_text(path, HEADER.format(source=source) + state + body)


def _line_of(text: str, pattern: str, nth: int = 0) -> str:
    """' line N' of the nth line matching a regex, or '' when none does."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if re.search(pattern, line)]
    return f" line {hits[nth]}" if len(hits) > nth else ""


def read_taxonomy(path: Path) -> LoadedTaxonomy:
    """Read and validate a taxonomy file; every problem is one TaxonomyError naming the file, line and fix."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TaxonomyError(f"{path} is not UTF-8 text ({exc.reason})", "save it as UTF-8, or delete it") from None
    lines = text.splitlines(keepends=True)
    head = 0
    while head < len(lines) and lines[head].startswith("#"):
        head += 1
    state = next((m for line in lines[:head] if (m := _STATE.match(line.rstrip("\n")))), None)
    body = "".join(lines[head:])
    edited = state is None or state.group(1) != _sha(body) or state.group(3) == "yes"
    return LoadedTaxonomy(parse_taxonomy(text, path), state.group(2) if state else "", edited)


def parse_taxonomy(text: str, path: Path) -> Taxonomy:
    def fail(problem: str, fix: str, line: str = "") -> TaxonomyError:
        return TaxonomyError(f"{path}{line}: {problem}", fix)

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise fail(f"not valid YAML ({getattr(exc, 'problem', None) or 'syntax'})",
                   "fix the syntax there, or delete the file to have it rebuilt", line) from None  # fmt: skip
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list) or not data["categories"]:
        raise fail("no `categories` list", "keep the layout ioa wrote: categories → modules, then assignments")
    categories: dict[str, str] = {}
    modules: list[TaxonomyModule] = []
    for c in data["categories"]:
        if not isinstance(c, dict) or not isinstance(c.get("modules"), list):
            raise fail("a category without a `modules` list", "give every category an id, a title and modules",
                       _line_of(text, r"^\s*-?\s*id:\s*" + re.escape(str(c.get("id") if isinstance(c, dict) else ""))))
        cid = str(c.get("id") or "")
        if not SNAKE.match(cid):
            raise fail(f"category id {cid!r} is not snake_case", "use lower-case letters, digits and _",
                       _line_of(text, r"^\s*-?\s*id:"))
        if cid in categories:
            raise fail(f"category id {cid!r} appears twice", "give each category its own id",
                       _line_of(text, rf"^\s*-?\s*id:\s*['\"]?{re.escape(cid)}['\"]?\s*$", 1))
        categories[cid] = str(c.get("title") or cid)
        for m in c["modules"]:
            modules.append(_read_module(m, cid, text, fail))
    seen: set[str] = set()
    for m in modules:
        if m.id in seen:
            raise fail(f"module id {m.id!r} appears twice", "give each module its own id (rename or merge one)",
                       _line_of(text, rf"^\s*-?\s*id:\s*['\"]?{re.escape(m.id)}['\"]?\s*$", 1))
        seen.add(m.id)
    for m in modules:
        unknown = [p for p in m.prerequisites if p not in seen]
        if unknown:
            raise fail(f"module {m.id!r} lists unknown prerequisite(s) {', '.join(unknown)}",
                       "use ids of modules in this file", _line_of(text, rf"^\s*-?\s*id:\s*['\"]?{re.escape(m.id)}\b"))
        m.prerequisites = _unique(m.prerequisites, drop=m.id)
    assignments = data.get("assignments") or {}
    if not isinstance(assignments, dict):
        raise fail("`assignments` is not a mapping", "write one `item_id: module_id` per line",
                   _line_of(text, r"^assignments:"))
    checked: dict[str, str] = {}
    for item, module in assignments.items():
        if str(module) not in seen:
            raise fail(f"item {item} is assigned to unknown module {module!r}",
                       "use a module id defined above, or delete the line to have the teacher classify the item",
                       _line_of(text, rf"^\s+['\"]?{re.escape(str(item))}['\"]?\s*:"))
        checked[str(item)] = str(module)
    notes = [str(n) for n in data.get("notes") or []]
    fallbacks = [str(i) for i in data.get("fallback_items") or [] if str(i) in checked]
    return Taxonomy(categories, modules, checked, fallbacks, notes)


def _read_module(m: Any, category: str, text: str, fail: Callable[..., TaxonomyError]) -> TaxonomyModule:
    if not isinstance(m, dict):
        raise fail(f"a module of category {category!r} is not a mapping", "write id, title, description, tier")
    mid = m.get("id")
    line = _line_of(text, rf"^\s*-?\s*id:\s*['\"]?{re.escape(str(mid))}\b")
    if not isinstance(mid, str) or not SNAKE.match(mid):
        raise fail(f"module id {mid!r} is not snake_case", "use lower-case letters, digits and _", line)
    tier = m.get("tier", 1)
    if isinstance(tier, bool) or not isinstance(tier, int) or not 1 <= tier <= TIERS:
        raise fail(f"module {mid!r} has tier {tier!r}", f"use a whole number from 1 to {TIERS}", line)
    prereqs = m.get("prerequisites") or []
    if isinstance(prereqs, str):
        prereqs = [prereqs]
    if not isinstance(prereqs, list):
        raise fail(f"module {mid!r} has prerequisites that are not a list", "write [id, id, ...]", line)
    return TaxonomyModule(mid, str(m.get("title") or mid), category, str(m.get("description") or ""), tier,
                          [str(p) for p in prereqs])  # fmt: skip


# ------------------------------------------------------------------------------------- build or reuse


@dataclass(frozen=True)
class TaxonomySettings:
    n_min: int = 10
    n_max: int = 40
    min_items: int = 5  # fewer items than this: merged into a sibling, or flagged
    sample_size: int = 24  # seed prompts the teacher sees when proposing modules
    batch_size: int = 10  # items per classification prompt


@dataclass(frozen=True)
class TaxonomyBuild:
    taxonomy: Taxonomy
    path: Path
    built: bool  # proposed afresh by the teacher in this call
    edited: bool  # the user's edited file was used
    classified: int  # items the teacher classified in this call
    fallbacks: int  # of those, assigned by ROUGE-L


def ensure_taxonomy(
    teacher: ChatModel,
    items: Mapping[str, str],
    path: Path,
    settings: TaxonomySettings = TaxonomySettings(),
    source: str = "seed data",
    progress: Progress | None = None,
) -> TaxonomyBuild:
    """The taxonomy of these items (id → prompt): read from `path` when it can be, else built by the teacher;
    written back whenever ioa changed it. See the module doc for the rules."""
    if not items:
        raise TaxonomyError(f"no seed items to build {path} from", "check the seed file and domain.options")
    sample = sample_prompts(items, settings.sample_size)
    inputs = inputs_hash("taxonomy-inputs", teacher.fingerprint, sample, settings.n_min, settings.n_max,
                         settings.min_items)  # fmt: skip
    path = Path(path)
    if path.exists():
        loaded = read_taxonomy(path)
        if loaded.edited or loaded.inputs == inputs:
            taxonomy = loaded.taxonomy
            missing = {i: t for i, t in items.items() if i not in taxonomy.assignments}
            result = classify_items(teacher, taxonomy, missing, settings.batch_size, progress) if missing else None
            flag_small_modules(taxonomy, settings.min_items, list(items))
            if missing:
                write_taxonomy(path, taxonomy, items, loaded.inputs or inputs, source, user_edited=loaded.edited)
            return TaxonomyBuild(taxonomy, path, False, loaded.edited, len(missing), result.fallback if result else 0)
    taxonomy = propose_modules(teacher, sample, settings.n_min, settings.n_max)
    result = classify_items(teacher, taxonomy, items, settings.batch_size, progress)
    merge_small_modules(taxonomy, settings.min_items, settings.n_min)
    propose_edges(teacher, taxonomy)
    write_taxonomy(path, taxonomy, items, inputs, source)
    return TaxonomyBuild(taxonomy, path, True, False, len(items), result.fallback)


def summary(build: TaxonomyBuild, items: Sequence[str]) -> dict[str, Any]:
    """What `ioa diagnose` prints about the taxonomy (JSON-friendly)."""
    tax = build.taxonomy
    counts = tax.counts(items)
    wanted = set(items)
    return {
        "path": str(build.path),
        "categories": len({m.category for m in tax.modules}),
        "modules": len(tax.modules),
        "items": len(items),
        "assigned": sum(1 for i in tax.assignments if i in wanted),
        "fallbacks": sum(1 for i in tax.fallbacks if i in wanted),
        "edited_by_user": build.edited,
        "built": build.built,
        "classified": build.classified,
        "notes": list(tax.notes),
        "rows": [
            {"module": m.id, "category": m.category, "tier": m.tier, "items": counts[m.id],
             "prerequisites": list(m.prerequisites), "flag": m.flag}
            for m in tax.modules
        ],
    }

