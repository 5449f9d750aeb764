"""Write docs/results.md from the results database (default: $FIXABILITY_DB_URL or .fixability/audit.db).

    python -m scripts.write_results [--db URL] [--out docs/results.md]
"""

import argparse
from pathlib import Path

from fixability_dag.pipeline.report import results_markdown
from fixability_dag.storage.store import AuditStore, default_url

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=default_url())
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    args = parser.parse_args()
    store = AuditStore(args.db)
    store.migrate()
    args.out.write_text(results_markdown(store))
    print(f"wrote {args.out}")
