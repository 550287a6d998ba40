"""DGUNet+ (every stage has its own weights) with the published deblurring widths.

DGUNet(in_c=3, out_c=3, n_feat=..., scale_unetfeats=..., scale_orsnetfeats=...)
The implementation lives in `dgunet.models`; this file only fixes the defaults.
"""

from dgunet.models import task_model

DGUNet = task_model("deblurring", "DGUNet_plus")
