"""DGUNet+ (every stage has its own weights) for super-resolution, with the deblurring widths.

DGUNet(in_c=3, out_c=3, n_feat=..., scale_unetfeats=..., scale_orsnetfeats=..., gradient=...)
Called as model(y, physics=op) like DGUNet.py; see docs/known_tasks.md.
"""

from dgunet.models import task_model

DGUNet = task_model("sr", "DGUNet_plus")
