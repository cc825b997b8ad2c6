"""Data files that Debian packages ship (alsa-utils' recordings, opencv-doc's example clips), found where the
package is installed, or where `make setup` extracted its .deb without installing it
(`apt-get download` + `dpkg-deb -x` into .venv/share/mmops-debian/<package>/)."""

from __future__ import annotations

import sys
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
