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


DOMAINS: dict[str, Callable[[DomainConfig], Domain]] = {"arithmetic": _arithmetic, "gsm8k": _gsm8k, "code": _code}


def get_domain(config: DomainConfig) -> Domain:
    """The domain a config names; an unknown name or an option the domain does not take is an error."""
    name = config.name.strip().lower()
    if name not in DOMAINS:
        raise DomainError(f"unknown domain {config.name!r}", f"use one of: {', '.join(DOMAINS)}")
    if config.options:
        # Neither built-in domain takes options yet; ignoring them would hide a typo.
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
    "parse_number",
]
