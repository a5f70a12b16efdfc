"""Model families: one torch-free table of what each is (table.py), recognition of a model from its files
(detect.py), and behind them one small interface per family (base.ModelFamily): load components, encode prompts,
training target, names."""
