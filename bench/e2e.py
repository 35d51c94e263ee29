"""``python bench/e2e.py [--quick] [--json] ...``: the end-to-end benchmark as a script.

Same as ``delivery bench e2e``; see ``workers/bench_e2e.py`` and ``bench/README.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.bench_e2e import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
