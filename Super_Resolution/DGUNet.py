"""DGUNet (stages 2..6 share weights) for super-resolution, with the deblurring widths.

DGUNet(in_c=3, out_c=3, n_feat=..., scale_unetfeats=..., scale_orsnetfeats=..., gradient=...)
Called as model(y, physics=op): y is the low-resolution image and op its downsampling operator
(dgunet.physics.Downsample); stage 1 starts from op.A_dagger(y). See docs/known_tasks.md.
"""

from dgunet.models import task_model

DGUNet = task_model("sr", "DGUNet")
