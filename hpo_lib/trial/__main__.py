"""``python -m hpo_lib.trial --name=value ...``: the trial as a process (Katib's pods and the embedded engine)."""

from hpo_lib.errors import exit_now
from hpo_lib.trial import main

if __name__ == "__main__":
    exit_now(main())  # no interpreter teardown: the engine frees the trial's slot as soon as its last line is out
