"""Turn a model spec into a ChatModel: embedded name, GGUF path, Hugging Face directory or URL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ioa.errors import ModelIntegrityError, ModelNotFoundError
from ioa.models.base import ChatModel
from ioa.models.cache import CachedModel, CallCache
from ioa.models.registry import EMBEDDED, embedded, installed_path, models_dir

if TYPE_CHECKING:
    from ioa.accounting import Accountant
    from ioa.config import HTTPConfig


def resolve_gguf(spec: str) -> tuple[Path, str | None]:
    """Path of a GGUF for an embedded name or a path, and its known sha256 where there is one."""
    if spec in EMBEDDED:
        model = embedded(spec)
        path = installed_path(model)
        if path is None:
            assembled = models_dir() / model.filename
            if assembled.exists():  # there, but never verified or changed since: never trusted unverified
                raise ModelIntegrityError(
                    f"{assembled} is not verified against the sha256 of {spec} (changed since install?)",
                    f"run `ioa models install {spec}` to verify it (and fetch it again if it does not match)",
                )
            raise ModelNotFoundError(
                f"embedded model {spec!r} is not installed", f"run `ioa models install {spec}`"
            )
        return path, model.sha256
    path = Path(spec).expanduser()
    if path.suffix == ".gguf" or path.is_file():
        return path, None
    raise ModelNotFoundError(f"{spec!r} is not an embedded model name or a .gguf file", _HINT)


_HINT = "use an embedded name (`ioa models`), a .gguf path, a Hugging Face directory or an http(s) URL"


def load_model(
    spec: str, n_ctx: int = 4096, http: HTTPConfig | None = None, accountant: Accountant | None = None
) -> ChatModel:
    """Load a model for generation from any supported spec.

    An http(s) URL (several separated by commas, plus `http.endpoints`) is an OpenAI-compatible server;
    `http` holds its settings and `accountant` counts its tokens and enforces the budget.
    """
    if spec.startswith(("http://", "https://")):
        from ioa.models.http import HTTPChatModel

        return HTTPChatModel.from_config(spec, http, accountant=accountant)
    path = Path(spec).expanduser()
    if spec not in EMBEDDED and path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} has no config.json, so it is not a Hugging Face model", _HINT)
        from ioa.models.hf import HFModel

        return HFModel(path)
    if spec not in EMBEDDED and not path.exists() and "/" not in spec and not spec.endswith(".gguf"):
        embedded(spec)  # raises the "unknown model name" error with the list of names
    from ioa.models.llamacpp import LlamaCppModel

    gguf, sha = resolve_gguf(spec)
    return LlamaCppModel(gguf, name=spec if spec in EMBEDDED else gguf.stem, fingerprint=sha, n_ctx=n_ctx)


def load_cached(
    spec: str, cache: CallCache, n_ctx: int = 4096, http: HTTPConfig | None = None,
    accountant: Accountant | None = None,
) -> CachedModel:
    """Load a model whose every call goes through the persistent call cache."""
    return CachedModel(load_model(spec, n_ctx=n_ctx, http=http, accountant=accountant), cache)
