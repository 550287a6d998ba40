"""DGUNet+ (every stage has its own weights) with the published cs widths.

DGUNet(in_c=1, out_c=1, cs_ratio=25, ...): Phi is learned, 32x32 blocks.
The implementation lives in `dgunet.models`; this file only fixes the defaults.
"""

from dgunet.models import task_model

DGUNet = task_model("cs", "DGUNet_plus")
