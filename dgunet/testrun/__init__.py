"""Testing the published models on the paper's test sets: the logic behind each task's test.py.

`main(task, argv)` runs one task's test sets; `run_datasets` is shared with
`python -m dgunet reproduce`. Modules: `datasets` (where each set lives), `loading` (model from
a checkpoint), `paired`/`sidd`/`dnd`/`cs` (one runner per kind of set), `matfiles` (.mat I/O).
"""

from dgunet.testrun.runner import main, run_datasets

__all__ = ["main", "run_datasets"]
