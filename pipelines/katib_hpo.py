"""The KFP pipeline, for those who compile or import it from a checkout: it lives in :mod:`hpo_lib.pipeline.dag`,
so an installed ``hpo`` has it too. ``python pipelines/katib_hpo.py [--output PATH]`` writes the committed
``katib_hpo_pipeline.yaml`` next to this file, as ``hpo pipeline compile`` does from the repository's root.
"""

import sys
from pathlib import Path

from hpo_lib.pipeline.dag import IMAGE, Outputs, compile_pipeline, katib_hpo, run_local

COMPILED = Path(__file__).with_name("katib_hpo_pipeline.yaml")

__all__ = ["COMPILED", "IMAGE", "Outputs", "compile_pipeline", "katib_hpo", "run_local"]

if __name__ == "__main__":
    from hpo_lib import cli

    sys.exit(cli.main(["pipeline", "compile", "--output", str(COMPILED), *sys.argv[1:]]))
