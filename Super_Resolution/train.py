"""Train DGUNet / DGUNet+ for super-resolution (x2, x3, x4): python train.py --help (docs/known_tasks.md)."""

import sys
from pathlib import Path

from dgunet.engine import main

if __name__ == "__main__":
    sys.exit(main(task="sr", default_config=Path(__file__).with_name("training.yml"), argv=None))
