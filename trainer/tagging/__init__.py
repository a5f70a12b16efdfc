"""Taggers and captioners for dataset preparation: WD14-family taggers (onnxruntime), Florence-2 and BLIP
(transformers), run over a folder by `python -m trainer caption` (docs/dataset.md).

`options` and `source` are torch-free (the GUI reads the kinds, defaults and model sources); `wd14`,
`captioners` and `run` load models and run only in that child process.
"""
