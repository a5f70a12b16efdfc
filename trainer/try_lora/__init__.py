"""`python -m trainer try`: LoRA files at several strengths, seeds and prompts on one base model, as a labelled
grid with measured effects (docs/training.md, "Try the LoRA"). grid, effects and picture are torch-free (the GUI
plans and shows grids with them); session and render load the model."""
