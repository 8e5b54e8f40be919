"""Local lm-eval tasks (YAML next to their Python helpers), indexed on their own.

`TASKS_DIR` is passed to `lm_eval.tasks.TaskManager(include_path=TASKS_DIR,
include_defaults=False)`, so the offline task loads without scanning lm-eval's built-in tasks.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).parent
