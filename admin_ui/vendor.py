"""Copy the panel's front-end libraries from node_modules into static/vendor/.

`make vendor` runs `npm ci` (which checks every tarball against the sha512 in
package-lock.json) and then this script, which copies the files listed in FILES and
records their SHA-256 in vendor.json. The copies are committed, so the appliance serves
them without npm; tests/test_admin_vendor.py checks them against vendor.json (and
against node_modules when it is present).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "vendor.json"
# static/vendor/<name>: (npm package, file inside the package)
FILES = {
    "htmx.min.js": ("htmx.org", "dist/htmx.min.js"),
    "uPlot.iife.min.js": ("uplot", "dist/uPlot.iife.min.js"),
    "uPlot.min.css": ("uplot", "dist/uPlot.min.css"),
    "htmx.LICENSE.txt": ("htmx.org", "LICENSE"),
    "uPlot.LICENSE.txt": ("uplot", "LICENSE"),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    out = HERE / "static" / "vendor"
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, (package, inner) in sorted(FILES.items()):
        root = HERE / "node_modules" / package
        version = json.loads((root / "package.json").read_text())["version"]
        shutil.copyfile(root / inner, out / name)
        entries.append(
            {
                "file": name,
                "package": package,
                "version": version,
                "source": inner,
                "sha256": sha256(out / name),
            }
        )
        print(f"static/vendor/{name} <- {package}@{version}/{inner}")
    MANIFEST.write_text(json.dumps({"files": entries}, indent=2) + "\n")


if __name__ == "__main__":
    main()
