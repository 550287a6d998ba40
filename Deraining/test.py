"""Test DGUNet / DGUNet+ on the Deraining test sets: `python test.py --weights W --input_dir DIR`.

All options: `python test.py --help`; details in docs/testing.md.
"""

import sys

from dgunet.testrun import main

if __name__ == "__main__":
    sys.exit(main("deraining"))
