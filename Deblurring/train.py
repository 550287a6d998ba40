"""Train DGUNet / DGUNet+ for deblurring: python train.py --help (docs/training.md)."""

import sys
from pathlib import Path

from dgunet.engine import main

if __name__ == "__main__":
    sys.exit(main(task="deblurring", default_config=Path(__file__).with_name("training.yml"), argv=None))
