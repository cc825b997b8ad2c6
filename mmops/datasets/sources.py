"""Where the real data that ships offline is found, never downloaded here: files inside installed Python
distributions (`package_file`), and files of Debian packages (alsa-utils' recordings, opencv-doc's example
clip), where the package is installed or where `make setup` extracted its .deb without installing it
(`apt-get download` + `dpkg-deb -x` into .venv/share/mmops-debian/<package>/: `debian_file`)."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from mmops.errors import NotFoundError

EXTRACTED = Path(sys.prefix) / "share" / "mmops-debian"


def debian_file(package: str, relpath: str) -> Path:
    """/<relpath> of an installed package, or of its extracted .deb."""
    for root in (Path("/"), EXTRACTED / package):
        path = root / relpath
        if path.is_file():
            return path
    raise NotFoundError(f"{relpath} of Debian's {package} is not here: run `make setup` (it extracts the package "
                        f"into {EXTRACTED / package}), or `apt-get install {package}`")


def package_file(dist: str, relpath: str) -> Path:
    """Path of a data file shipped inside an installed distribution, found without importing it."""
    try:
        path = Path(str(metadata.distribution(dist).locate_file(relpath)))
    except metadata.PackageNotFoundError as exc:
        raise NotFoundError(f"the data source needs the package {dist!r}; run `make setup`") from exc
    if not path.is_file():
        raise NotFoundError(f"{dist} is installed but lacks {relpath}")
    return path
