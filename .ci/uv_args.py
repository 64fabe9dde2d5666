"""Print this machine's pip settings as `uv pip install` arguments (one per line), so uv installs
from the same places pip would: find-links, constraints, index and extra indexes. uv reads no
pip.conf of its own; and like pip it may take a package from whichever index has the best match."""

import shlex
import subprocess
import sys

FLAGS = {"find-links": "--find-links", "constraint": "--constraint", "index-url": "--index-url",
         "extra-index-url": "--extra-index-url"}

listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
args = ["--index-strategy", "unsafe-best-match"]
for line in listing.splitlines():
    key, _, value = line.partition("=")
    name = key.rsplit(".", 1)[-1]
    if name in FLAGS:
        for item in shlex.split(value.strip().strip("'\"")):
            if [FLAGS[name], item] not in [args[i:i + 2] for i in range(0, len(args), 2)]:
                args += [FLAGS[name], item]
print("\n".join(args))
