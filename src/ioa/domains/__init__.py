"""What is taught: the Domain protocol, the built-in domains and `get_domain` to pick one from config."""

from __future__ import annotations

from collections.abc import Callable

from ioa.config import DomainConfig
from ioa.domains.answers import answers_match, check_response, extract_answer, parse_number
from ioa.domains.arithmetic import ArithmeticDomain
from ioa.domains.base import Domain, Item, Module, Split
from ioa.domains.code import CodeDomain
from ioa.domains.gsm8k import GSM8KDomain
from ioa.errors import DomainError


def _arithmetic(config: DomainConfig) -> Domain:
    return ArithmeticDomain()


def _gsm8k(config: DomainConfig) -> Domain:
    return GSM8KDomain(config.data_path)


def _code(config: DomainConfig) -> Domain:
    return CodeDomain(config.data_path)


def _seed(config: DomainConfig) -> Domain:
    # Imported here: the seed-data domain pulls in the taxonomy, the judge and the adapter, which import
    # ioa.domains.base themselves.
    from ioa.domains.seeddata import seed_domain_from_file

    return seed_domain_from_file(config)


# Seed data (the user's JSONL, modules from a teacher-built taxonomy): ioa.domains.seeddata.
SEED_DOMAINS = ("seed", "seeddata")
DOMAINS: dict[str, Callable[[DomainConfig], Domain]] = {
    "arithmetic": _arithmetic, "gsm8k": _gsm8k, "code": _code, **dict.fromkeys(SEED_DOMAINS, _seed),
}  # fmt: skip


def is_seed_domain(config: DomainConfig) -> bool:
    return config.name.strip().lower() in SEED_DOMAINS


def get_domain(config: DomainConfig) -> Domain:
    """The domain a config names; an unknown name or an option the domain does not take is an error.

    A seed-data domain is read with its existing taxonomy file (domain.options.taxonomy); to build the
    taxonomy with the teacher, open it with ioa.diagnosis.open_domain (as `ioa diagnose` does)."""
    name = config.name.strip().lower()
    if name not in DOMAINS:
        raise DomainError(f"unknown domain {config.name!r}", f"use one of: {', '.join(DOMAINS)}")
    if config.options and name not in SEED_DOMAINS:
        # The built-in domains take no options; ignoring them would hide a typo.
        raise DomainError(
            f"domain {name!r} takes no options (got {', '.join(sorted(config.options))})",
            "remove domain.options from the config",
        )
    return DOMAINS[name](config)


__all__ = [
    "DOMAINS",
    "ArithmeticDomain",
    "CodeDomain",
    "Domain",
    "DomainError",
    "GSM8KDomain",
    "Item",
    "Module",
    "Split",
    "answers_match",
    "check_response",
    "extract_answer",
    "get_domain",
    "is_seed_domain",
    "parse_number",
]
