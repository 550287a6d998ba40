"""Test DGUNet / DGUNet+ super-resolution on clean test images: `python test.py --weights W --input_dir DIR`.

The low-resolution inputs are made with the fixed benchmark degradations (dgunet/benchmarks);
all options: `python test.py --help`; details in docs/known_tasks.md.
"""

import sys

from dgunet.testrun import main

if __name__ == "__main__":
    sys.exit(main("sr"))
